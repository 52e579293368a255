"""Segment new T1 scans with any trained model of the workspace, and measure their CSF, GM and WM volumes."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from .core.atomic import atomic_path
from .core.errors import InputError
from .core.provenance import dataset_fingerprint, staleness
from .core.vocabulary import NNUNET_PREFIX, TISSUES
from .core.workspace import Workspace
from .data.preprocess import Preprocessing, apply
from .data.volumes import Volume, read_volume, write_volume

SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")
VOLUME_COLUMNS = ["scan", "input", "output", "model", "CSF_ml", "GM_ml", "WM_ml", "total_ml", "GM_fraction",
                  "WM_fraction", "BPF", "seconds", "warnings", "error"]
# warning thresholds: far enough from training that a user should look before publishing the numbers
INTENSITY_RATIO = 2.0  # scan's 99.5th percentile of brain voxels vs training's, either way
SKULL_ZERO_FRACTION = 0.2  # a skull-stripped T1 is mostly exact zeros; IBSR's are ~80 % zeros
SPACING_RATIO = 1.5  # per axis, either way


def _stem(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def collect_inputs(paths: list[Path]) -> list[Path]:
    """NIfTI files and Analyze pairs named directly or found in folders (recursively), each once, in order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path} does not exist; pass NIfTI files (.nii, .nii.gz), Analyze .hdr/.img, or folders.")
    unique, seen = [], set()
    for path in found:
        key = path.resolve().with_name(_stem(path)) if path.name.lower().endswith((".hdr", ".img")) else path.resolve()
        if key not in seen:  # an Analyze .img and its .hdr are one scan
            seen.add(key)
            unique.append(path.with_suffix(".hdr") if path.name.lower().endswith(".img") else path)
    if not unique:
        raise InputError(f"no .nii, .nii.gz or .hdr/.img file in {', '.join(map(str, paths))}; point at the scans.")
    return unique


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """`<input name>_tissue.nii.gz`; two inputs with one name get their folder's name in front."""
    stems = [_stem(p) for p in inputs]
    return {p: (f"{p.parent.name}_{s}" if stems.count(s) > 1 else s) + "_tissue.nii.gz" for p, s in zip(inputs, stems)}


@dataclass
class Model:
    name: str
    scores: Optional[dict]  # the leaderboard row (held-out Dice etc.), None when not on the leaderboard
    info: dict  # nnU-Net: model.json of its predictions; baseline: {"run": folder}


def choose_model(ws: Workspace, name: Optional[str]) -> Model:
    """`name`, or the leaderboard's best model, with its held-out scores; refused when it was made from another
    dataset than the workspace's."""
    board = pd.read_csv(ws.leaderboard) if ws.leaderboard.is_file() else None
    if board is not None and "dataset_fingerprint" in board and not board.empty:
        if set(board["dataset_fingerprint"].astype(str)) != {dataset_fingerprint(ws)}:
            board = None  # scores of another dataset say nothing about these models
    if name is None and board is None and ws.leaderboard.is_file():
        raise InputError(f"{ws.leaderboard} ranks models of another dataset; run `ibsr-nnunet leaderboard` again, "
                         f"or pass --model.")
    if name is None:
        if board is None or board.empty:
            raise InputError(f"no leaderboard at {ws.leaderboard} to pick the best model from; "
                             f"run `ibsr-nnunet leaderboard`, or pass --model (e.g. nnunet_ensemble or unet2d__dice_ce).")
        name = str(board.sort_values("rank").iloc[0]["model"])
    scores = None
    if board is not None and name in set(board["model"]):
        scores = board.set_index("model").loc[name].to_dict()
    if name.startswith(NNUNET_PREFIX):
        record = ws.predictions / name / "model.json"
        if not record.is_file():
            raise InputError(f"model {name} has no record at {record}; run `ibsr-nnunet ensemble` first.")
        _refuse_stale(ws, ws.predictions / name, name, "ibsr-nnunet ensemble")
        return Model(name, scores, json.loads(record.read_text()))
    run = ws.baselines / name
    if not (run / "best.pt").is_file():
        raise InputError(f"model {name} is not trained in this workspace (no {run / 'best.pt'}); pick a model of "
                         f"the leaderboard or train it with `ibsr-nnunet baseline train`.")
    _refuse_stale(ws, run, name, "ibsr-nnunet baseline train --archive-stale")
    return Model(name, scores, {"run": str(run)})


def _refuse_stale(ws: Workspace, folder: Path, name: str, fix: str) -> None:
    why = staleness(folder, dataset_fingerprint(ws))
    if why:
        raise InputError(f"model {name} is stale ({folder}: {why}); run `{fix}` first.")


@dataclass
class Reference:
    """What training looked like, to warn about scans that do not."""

    preprocessing: Preprocessing
    intensity_995: Optional[float]
    spacing: tuple[float, float, float]


def training_reference(ws: Workspace) -> Reference:
    manifest = json.loads(ws.manifest.read_text())
    settings = dict(manifest["preprocessing"])
    settings["n4_iterations"] = tuple(settings["n4_iterations"])
    spacings = [case["spacing"] for case in manifest["cases"] if case["role"] == "train"]
    fingerprint = ws.preprocessed_dataset / "dataset_fingerprint.json"
    intensity = None
    if fingerprint.is_file():
        intensity = json.loads(fingerprint.read_text())["foreground_intensity_properties_per_channel"]["0"][
            "percentile_99_5"]
    return Reference(Preprocessing(**settings), intensity, tuple(float(s) for s in np.median(spacings, axis=0)))


def scan_warnings(volume: Volume, reference: Reference) -> list[str]:
    found = []
    brain = volume.array[volume.array != 0]
    zero_fraction = 1 - brain.size / volume.array.size
    if zero_fraction < SKULL_ZERO_FRACTION:
        found.append(f"does not look skull-stripped: only {zero_fraction:.0%} of voxels are 0")
    if reference.intensity_995 and brain.size:
        high = float(np.percentile(brain, 99.5))
        ratio = high / reference.intensity_995
        if not 1 / INTENSITY_RATIO <= ratio <= INTENSITY_RATIO:
            found.append(f"intensity far from training: 99.5th percentile {high:.4g} vs {reference.intensity_995:.4g}")
    ratios = [s / r for s, r in zip(volume.spacing, reference.spacing)]
    if any(not 1 / SPACING_RATIO <= r <= SPACING_RATIO for r in ratios):
        found.append(f"spacing {tuple(round(s, 3) for s in volume.spacing)} mm is far from training's "
                     f"{tuple(round(s, 3) for s in reference.spacing)} mm")
    return found


def tissue_volumes(labels: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """mL per tissue from voxel counts × voxel volume, the total, GM and WM fractions of it, and BPF."""
    voxel_ml = float(np.prod(spacing[:3])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=4)
    ml = {f"{name}_ml": float(counts[label]) * voxel_ml for label, name in TISSUES.items()}
    total = sum(ml.values())
    parenchyma = ml["GM_ml"] + ml["WM_ml"]
    return {**ml, "total_ml": total,
            "GM_fraction": ml["GM_ml"] / total if total else math.nan,
            "WM_fraction": ml["WM_ml"] / total if total else math.nan,
            "BPF": parenchyma / total if total else math.nan}


@dataclass
class Scan:
    input: Path
    output: Path
    staged: Optional[Path] = None
    volume: Optional[Volume] = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: Optional[str] = None
    volumes: dict[str, float] = field(default_factory=dict)


@dataclass
class SegmentResult:
    model: Model
    scans: list[Scan]
    csv: Path

    @property
    def failed(self) -> list[Scan]:
        return [s for s in self.scans if s.error]


def _predict_nnunet(ws: Workspace, model: Model, staged: dict[str, Path], scratch: Path, device: str, jobs: int,
                    on_scan: Callable[[str, float], None]) -> Path:
    from .nnunet.paths import model_folder
    from .nnunet.predict import apply_postprocessing, ensemble_folders, predict

    info = model.info
    log = scratch / "nnunet.log"
    raw = {}
    for configuration in info["configurations"]:
        raw[configuration] = scratch / f"raw-{configuration}"
        by_image = {path: scan for scan, path in staged.items()}
        predict(ws, configuration, info["trainer"], folds=tuple(info["folds"]), images=list(staged.values()),
                out=raw[configuration], device=device, log=log, on_image=lambda image, s: on_scan(by_image[image], s),
                probabilities=len(info["configurations"]) > 1)  # only ensembling needs them
    plans_json = model_folder(ws, info["configurations"][0], info["trainer"]) / "plans.json"
    folder = raw[info["configurations"][0]]
    if len(raw) > 1:
        folder = scratch / "raw-ensemble"
        ensemble_folders(list(raw.values()), folder, plans_json=plans_json, jobs=jobs, log=log)
    labels = scratch / "labels"
    apply_postprocessing(Path(info["postprocessing_file"]), folder, labels, plans_json=plans_json, jobs=jobs,
                         log=log)
    return labels


def _predict_baseline(model: Model, staged: dict[str, Path], scratch: Path, device: str,
                      on_scan: Callable[[str, float], None]) -> Path:
    from baselines.infer import predict_files

    labels = scratch / "labels"
    clock = [time.perf_counter()]

    def done(scan: str, skipped: bool) -> None:
        now = time.perf_counter()
        on_scan(scan, now - clock[0])
        clock[0] = now

    predict_files(Path(model.info["run"]), list(staged.items()), labels, device=device, on_case=done)
    return labels


def segment(ws: Workspace, inputs: list[Path], output: Path, *, model_name: Optional[str] = None,
            device: str = "auto", jobs: int = 1, on_start: Callable[[Model, int], None] = lambda m, n: None,
            on_scan_done: Callable[[Scan], None] = lambda s: None) -> SegmentResult:
    """Stage (preprocess as in training), predict, write `<name>_tissue.nii.gz` on each input's grid, and volumes.csv.

    A scan that cannot be read is reported in its row and skipped; the others finish.
    """
    files = collect_inputs(inputs)
    model = choose_model(ws, model_name)
    reference = training_reference(ws)
    output.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    scans = [Scan(input=f, output=output / names[f]) for f in files]
    on_start(model, len(scans))
    scratch = output / f".tmp-segment-{os.getpid()}-{secrets.token_hex(4)}"
    (scratch / "images").mkdir(parents=True)
    try:
        by_id = _stage(scans, scratch / "images", reference, on_scan_done)
        if by_id:
            labels = _predict(ws, model, by_id, scratch, device, jobs)
            _write_tissues(by_id, labels, on_scan_done)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return SegmentResult(model, scans, _write_volumes_csv(scans, model, output))


def _stage(scans: list[Scan], images: Path, reference: Reference,
           on_scan_done: Callable[[Scan], None]) -> dict[str, Scan]:
    """Read, check and preprocess each scan into `images`; the staged scans by ID. Unreadable ones are done here."""
    by_id: dict[str, Scan] = {}
    for index, scan in enumerate(scans):
        started = time.perf_counter()
        try:
            scan.volume = read_volume(scan.input)
            scan.warnings = scan_warnings(scan.volume, reference)
            prepared = apply(scan.volume, reference.preprocessing)
            scan_id = f"scan{index:05d}"
            scan.staged = images / f"{scan_id}_0000.nii.gz"
            write_volume(prepared.with_array(prepared.array.astype(np.float32)), scan.staged)
            by_id[scan_id] = scan
        except InputError as err:
            scan.error = str(err)
            on_scan_done(scan)
        scan.seconds += time.perf_counter() - started
    return by_id


def _predict(ws: Workspace, model: Model, by_id: dict[str, Scan], scratch: Path, device: str, jobs: int) -> Path:
    """Predict every staged scan, adding each one's share of the time to it; the folder of predicted label maps."""
    staged = {scan_id: scan.staged for scan_id, scan in by_id.items()}

    def predicted(scan_id: str, seconds: float) -> None:
        by_id[scan_id].seconds += seconds

    if model.name.startswith(NNUNET_PREFIX):
        return _predict_nnunet(ws, model, staged, scratch, device, jobs, predicted)
    return _predict_baseline(model, staged, scratch, device, predicted)


def _write_tissues(by_id: dict[str, Scan], labels: Path, on_scan_done: Callable[[Scan], None]) -> None:
    """Write each scan's predicted tissue map on its input's grid and measure its volumes."""
    for scan_id, scan in by_id.items():
        started = time.perf_counter()
        predicted_labels = read_volume(labels / f"{scan_id}.nii.gz").array
        if predicted_labels.shape != scan.volume.array.shape:
            scan.error = f"prediction shape {predicted_labels.shape} differs from the input's {scan.volume.array.shape}"
        else:
            tissue = predicted_labels.astype(np.uint8)
            with atomic_path(scan.output) as tmp:
                write_volume(scan.volume.with_array(tissue), tmp)
            scan.volumes = tissue_volumes(tissue, scan.volume.spacing)
        scan.seconds += time.perf_counter() - started
        scan.volume = None  # free the voxels as we go
        on_scan_done(scan)


def _write_volumes_csv(scans: list[Scan], model: Model, output: Path) -> Path:
    """output/volumes.csv: one row a scan, failed ones with their error."""
    rows = [{"scan": _stem(s.input), "input": str(s.input), "output": "" if s.error else str(s.output),
             "model": model.name, **{c: s.volumes.get(c, math.nan) for c in VOLUME_COLUMNS[4:11]},
             "seconds": round(s.seconds, 3), "warnings": "; ".join(s.warnings), "error": s.error or ""}
            for s in scans]
    csv = output / "volumes.csv"
    with atomic_path(csv) as tmp:
        pd.DataFrame(rows, columns=VOLUME_COLUMNS).to_csv(tmp, index=False)
    return csv
