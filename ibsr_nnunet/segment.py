"""Segment new T1 scans with any trained model of the workspace, and measure their CSF, GM and WM volumes."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import secrets
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import pandas as pd

from .core.atomic import FULL_DISK, NoSpaceError, atomic_path, no_space, write_json
from .core.choices import fraction
from .core.errors import InputError
from .core.jsonfile import read_json_or_none
from .core.locks import Lock, lock_path
from .core.manifest import Manifest, read_manifest
from .core.names import check_model_name
from .core.orientation import OBLIQUE_DEGREES, Reorientation, obliquity_degrees, towards
from .core.provenance import recorded_weights, staleness, weights_changed, weights_signature
from .core.vocabulary import CONFIGURATIONS, N_FOLDS, NNUNET_MODELS, NNUNET_PREFIX, TISSUES
from .core.workspace import Workspace
from .data.preprocess import Preprocessing, apply
from .data.volumes import Volume, read_volume, write_volume
from .nnunet.plans import read_dataset_fingerprint
from .nnunet.prediction_record import prediction_record_path, read_prediction_record

if TYPE_CHECKING:
    from .evaluation.qc import Snapshot

SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")
# warning thresholds: far enough from training that a user should look before publishing the numbers
INTENSITY_RATIO = 2.0  # scan's 99.5th percentile of brain voxels vs training's, either way
SKULL_ZERO_FRACTION = 0.2  # a skull-stripped T1 is mostly exact zeros; IBSR's are ~80 % zeros
SPACING_RATIO = 1.5  # per axis, either way


def _stem(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _extension(path: Path) -> str:
    return next((path.name[-len(s):] for s in SUFFIXES if path.name.lower().endswith(s)), path.suffix)


def collect_inputs(paths: list[Path], exclude: Optional[Path] = None) -> list[Path]:
    """NIfTI files and Analyze pairs named directly or found in folders (recursively, skipping `exclude`: the
    output folder), each once, in order."""
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES)
                            and not (skip is not None and p.resolve().is_relative_to(skip)))
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
    """Each input's output name (without `_tissue.nii.gz` / `_qc.png`), unique for any set of inputs.

    The rule: the file name without its extension; inputs that share it get the folders that tell them apart (from
    their common folder, joined with `__`) in front; inputs in one folder that still share it (`s.nii` beside
    `s.nii.gz`) get their extension behind (`s_nii`, `s_nii_gz`).
    """
    names = {p: _stem(p) for p in inputs}

    def clashing() -> list[list[Path]]:
        groups: dict[str, list[Path]] = {}
        for path, name in names.items():
            groups.setdefault(name, []).append(path)
        return [group for group in groups.values() if len(group) > 1]

    for group in clashing():
        root = Path(os.path.commonpath([str(p.absolute().parent) for p in group]))
        for path in group:
            folders = path.absolute().parent.relative_to(root).parts
            names[path] = "__".join([*folders, _stem(path)])
    for group in clashing():
        for path in group:
            names[path] = f"{names[path]}_{_extension(path).lstrip('.').replace('.', '_')}"
    for group in clashing():  # the same file named twice under different paths: number them
        for index, path in enumerate(group[1:], start=2):
            names[path] = f"{names[path]}_{index}"
    return names


@dataclass
class Model:
    name: str
    scores: Optional[dict]  # the leaderboard row (held-out Dice etc.), None when not on the leaderboard
    info: dict  # nnU-Net: model.json of its predictions; baseline: {"run": folder}


def choose_model(ws: Workspace, name: Optional[str], manifest: Optional[Manifest] = None) -> Model:
    """`name`, or the leaderboard's best model, with its held-out scores (none when they were made with other weights
    than it holds now); refused when it was made from another dataset than the workspace's, or when its training (a
    baseline run, an nnU-Net fold) has not finished."""
    fingerprint = (read_manifest(ws) if manifest is None else manifest).fingerprint
    if name is not None:
        checked_model_name(name)
    board = pd.read_csv(ws.leaderboard) if ws.leaderboard.is_file() else None
    if board is not None and "dataset_fingerprint" in board and not board.empty:
        if set(board["dataset_fingerprint"].astype(str)) != {fingerprint}:
            board = None  # scores of another dataset say nothing about these models
    if name is None and board is None and ws.leaderboard.is_file():
        raise InputError(f"{ws.leaderboard} ranks models of another dataset; run `ibsr-nnunet leaderboard` again, "
                         f"or pass --model.")
    best = name is None  # the leaderboard's best
    if best:
        if board is None or board.empty:
            raise InputError(f"no leaderboard at {ws.leaderboard} to pick the best model from; "
                             "run `ibsr-nnunet leaderboard`, or pass --model "
                             "(e.g. nnunet_ensemble or unet2d__dice_ce).")
        name = _best_trained(ws, board)
    scores = None
    predicted = recorded_weights(ws.predictions / name)
    if predicted and (changed := weights_changed(ws, predicted)):
        if best:
            raise InputError(f"the leaderboard's best model {name} was scored with other weights than it holds now "
                             f"({changed}); predict it again and run `ibsr-nnunet leaderboard`, or pass --model.")
        board = None  # its scores were made with other weights than the model holds now
    if board is not None and name in set(board["model"]):
        scores = board.set_index("model").loc[name].to_dict()
    if name.startswith(NNUNET_PREFIX):
        record = prediction_record_path(ws.predictions / name)
        if not record.is_file():
            raise InputError(f"model {name} has no record at {record}; run `ibsr-nnunet ensemble` first.")
        _refuse_stale(ws.predictions / name, name, "ibsr-nnunet ensemble", fingerprint)
        info = nnunet_record(ws, record)
        _refuse_unfinished_folds(ws, name, info)
        return Model(name, scores, info)
    from baselines.run_folder import best_weights_path
    from baselines.workspace import unfinished

    run = ws.baselines / name
    if not (best := best_weights_path(run)).is_file():
        raise InputError(f"model {name} is not trained in this workspace (no {best}); pick a model of "
                         f"the leaderboard or train it with `ibsr-nnunet baseline train`.")
    _refuse_stale(run, name, "ibsr-nnunet baseline train --archive-stale", fingerprint)
    if why := unfinished(run):
        raise InputError(f"model {name} ({run}) {why}, then segment.")
    return Model(name, scores, {"run": str(run)})


def _refuse_unfinished_folds(ws: Workspace, name: str, info: dict) -> None:
    """Refuse an nnU-Net model one of whose folds a live `train` writes, or whose training has not finished."""
    from .nnunet.fold import fold_unready
    from .nnunet.paths import fold_folder

    for configuration in info["configurations"]:
        for fold in info["folds"]:
            folder = fold_folder(ws, configuration, fold, trainer=info["trainer"])
            if why := fold_unready(folder):
                raise InputError(f"model {name} uses {configuration} fold {fold} ({folder}), which {why}; let its "
                                 f"`ibsr-nnunet train --fold {fold} --config {configuration}` finish (run it again "
                                 f"if it stopped), then segment.")


def checked_model_name(name: str) -> str:
    """`name` when it can name a model of a workspace (an nnU-Net model or MODEL__LOSS); an InputError otherwise."""
    from baselines.registry import check_baseline_name

    check_model_name(name, "--model")
    if name.startswith(NNUNET_PREFIX):
        if name not in NNUNET_MODELS.values():
            raise InputError(f"--model {name!r} is not an nnU-Net model; pass one of "
                             f"{', '.join(NNUNET_MODELS.values())}.")
        return name
    return check_baseline_name(name, "--model")


def _trained_here(ws: Workspace, name: str) -> bool:
    """Whether `name` is a model trained in this workspace (not an `evaluate --name` entry of outside predictions)."""
    from baselines.registry import baseline_problem
    from baselines.run_folder import best_weights_path

    if name.startswith(NNUNET_PREFIX):
        return name in NNUNET_MODELS.values() and prediction_record_path(ws.predictions / name).is_file()
    return baseline_problem(name) is None and best_weights_path(ws.baselines / name).is_file()


def _best_trained(ws: Workspace, board: pd.DataFrame) -> str:
    """The best-ranked leaderboard model that is a trained model of this workspace."""
    ranked = [str(model) for model in board.sort_values("rank")["model"]]
    for name in ranked:
        if _trained_here(ws, name):
            return name
    raise InputError(f"none of the models on {ws.leaderboard} ({', '.join(ranked)}) is trained in this workspace; "
                     f"pass --model, or train one (`ibsr-nnunet ensemble`, `ibsr-nnunet baseline train`).")


def nnunet_record(ws: Workspace, record: Path) -> dict:
    """The model.json of an nnU-Net prediction set, refused unless every file it names (folds, postprocessing) lies
    inside this workspace's nnU-Net results: nnU-Net unpickles them."""
    from .nnunet.paths import model_folder, trainer_schedule

    results = ws.results_dataset.resolve()
    try:
        info = read_prediction_record(record.parent)
        trainer, configurations, folds = info.trainer, info.configurations, info.folds
        trainer_schedule(trainer)  # one of our trainers' names, so a folder name, never a path
        inside = (configurations and set(configurations) <= set(CONFIGURATIONS)
                  and folds and all(0 <= f < N_FOLDS for f in folds)
                  and all(model_folder(ws, c, trainer).resolve().is_relative_to(results) for c in configurations)
                  and info.postprocessing_file is not None
                  and info.postprocessing_file.resolve().is_relative_to(results))
    except (InputError, KeyError, AttributeError):
        inside = False
    if not inside:
        raise InputError(f"{record} is not a model record of this workspace (it must name our trainer, configurations "
                         f"{', '.join(CONFIGURATIONS)}, folds 0-{N_FOLDS - 1} and files inside {results}); run "
                         f"`ibsr-nnunet ensemble` again.")
    return info.as_record()


def _refuse_stale(folder: Path, name: str, fix: str, fingerprint: str) -> None:
    why = staleness(folder, fingerprint)
    if why:
        raise InputError(f"model {name} is stale ({folder}: {why}); run `{fix}` first.")


@dataclass
class Reference:
    """What training looked like, to warn about scans that do not."""

    preprocessing: Preprocessing
    intensity_995: Optional[float]
    spacing: tuple[float, float, float]


def training_reference(ws: Workspace, manifest: Manifest) -> Reference:
    settings = dict(manifest.preprocessing)
    settings["n4_iterations"] = tuple(settings["n4_iterations"])
    fingerprint = read_dataset_fingerprint(ws)
    intensity = None
    if fingerprint is not None:
        intensity = fingerprint["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"]
    return Reference(Preprocessing(**settings), intensity, manifest.training_spacing)


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
    name: str  # output name, without _tissue.nii.gz / _qc.png
    output: Path
    staged: Optional[Path] = None  # nnU-Net: the preprocessed image in the model's orientation
    volume: Optional[Volume] = None  # the input as read (its grid is the output's)
    prepared: Optional[Volume] = None  # reoriented to the model's training orientation, preprocessed as in training
    reorientation: Optional[Reorientation] = None  # input axes -> the model's training orientation
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: Optional[str] = None
    volumes: dict[str, float] = field(default_factory=dict)
    reused: Optional[dict] = None  # the volumes.csv row of an earlier run with the same input, model and options
    qc: Optional[Path] = None


@dataclass
class SegmentResult:
    model: Model
    scans: list[Scan]
    csv: Path
    sheet: Optional[Path] = None

    @property
    def failed(self) -> list[Scan]:
        return [s for s in self.scans if s.error]

    @property
    def reused(self) -> list[Scan]:
        return [s for s in self.scans if s.reused is not None]


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment. tta None: on for CUDA, off for the CPU (mirroring costs 2-6x there: bench/segment.py);
    step_size: the sliding window's step as a fraction of its size (nnU-Net's tile step; a baseline's overlap is
    1 - step_size)."""

    tta: Optional[bool] = None
    step_size: float = 0.5
    soft_volumes: bool = False
    qc: bool = True
    qc_sheet: bool = False

    def __post_init__(self) -> None:
        fraction("--step-size", self.step_size, example="e.g. 0.5 (nnU-Net's default)")

    def resolved(self, device: str) -> "SegmentOptions":
        """These options with TTA decided for the device that will run."""
        if self.tta is not None:
            return self
        from .core.devices import torch_device

        return dataclasses.replace(self, tta=torch_device(device).type == "cuda")


def model_axcodes(manifest: Manifest, model: Model) -> tuple[str, ...]:
    """The orientation the model was trained in: its own record, else the conversion manifest's training images."""
    if model.info.get("axcodes"):
        return tuple(model.info["axcodes"])
    if model.info.get("run"):
        from baselines.run_folder import read_orientation

        if orientation := read_orientation(Path(model.info["run"])):
            return orientation.axcodes
    return manifest.training_axcodes


def model_signature(ws: Workspace, model: Model, fingerprint: str) -> str:
    """Changes whenever the model's weights (their bytes, size or mtime), postprocessing or dataset change: a re-run
    redoes the scans then."""
    if model.name.startswith(NNUNET_PREFIX):
        from .nnunet.paths import fold_folder

        files = [fold_folder(ws, c, f, trainer=model.info["trainer"]) / "checkpoint_final.pth"
                 for c in model.info["configurations"] for f in model.info["folds"]]
        files.append(Path(model.info["postprocessing_file"]))
    else:
        from baselines.run_folder import best_weights_path

        files = [best_weights_path(Path(model.info["run"]))]
    identity = {"model": model.name, "dataset": fingerprint, "weights": weights_signature(ws, files)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def input_signature(path: Path) -> str:
    """sha256 of the scan's bytes (both files of an Analyze pair)."""
    digest = hashlib.sha256()
    for part in ([path, path.with_suffix(".img")] if path.name.lower().endswith(".hdr") else [path]):
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def segment(ws: Workspace, inputs: list[Path], output: Path, *, model_name: Optional[str] = None,
            device: str = "auto", jobs: int = 1, options: SegmentOptions = SegmentOptions(),
            on_start: Callable[[Model, int], None] = lambda m, n: None,
            on_scan_done: Callable[[Scan], None] = lambda s: None) -> SegmentResult:
    """Stage each scan (reoriented to the model's training orientation, preprocessed as in training), predict,
    carry the map back and write `<name>_tissue.nii.gz` on each input's exact grid, a QC picture, and volumes.csv.

    A scan that fails (unreadable, its prediction or its QC picture) is reported in its row, leaves no files, and
    the others go on; a full disk stops the run in one sentence. Scans already segmented with the same input bytes,
    model and options are not redone.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; pass a folder (it is created if missing).")
    files = collect_inputs(inputs, exclude=output)
    manifest = read_manifest(ws)
    model = choose_model(ws, model_name, manifest)
    options = options.resolved(device)
    names = output_names(files)
    scans = [Scan(input=f, name=names[f], output=output / f"{names[f]}_tissue.nii.gz") for f in files]
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {output} ({err.strerror}); pass --output a folder you "
                         f"can write to.") from err
    try:
        with Lock(lock_path(output), f"segmentation output {output}", "ibsr-nnunet segment"):
            return _segment_locked(ws, manifest, model, scans, output, device, jobs, options, on_start, on_scan_done)
    except OSError as err:  # the lock file, or a write that names no file of ours
        if err.errno not in FULL_DISK:
            raise
        raise no_space(err.filename or output) from err
    finally:
        if created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # refused before anything was written (a model that cannot be loaded): leave no trace


def _segment_locked(ws: Workspace, manifest: Manifest, model: Model, scans: list[Scan], output: Path, device: str,
                    jobs: int,
                    options: SegmentOptions, on_start: Callable[[Model, int], None],
                    on_scan_done: Callable[[Scan], None]) -> SegmentResult:
    """`segment` while it holds the output folder: reuse what is current, segment the rest, write the tables."""
    signature = model_signature(ws, model, manifest.fingerprint)
    record = _SegmentRecord.load(output)
    for scan in scans:
        scan.reused = record.reusable(scan, signature, options)
    on_start(model, len(scans))
    todo = [scan for scan in scans if scan.reused is None]
    for scan in scans:
        if scan.reused is not None:
            on_scan_done(scan)
    if todo:
        context = _Context(ws, model, model_axcodes(manifest, model), training_reference(ws, manifest), options,
                           device, jobs)
        _segment_all(context, todo, output, on_scan_done)
    record.update(scans, signature, options)
    csv = _write_volumes_csv(scans, model, output, options)
    record.save(output)
    sheet = _draw_sheet(scans, output / "qc_sheet.png", model.name) if options.qc_sheet else None
    return SegmentResult(model, scans, csv, sheet)


@dataclass
class _Context:
    """Everything one segment run predicts with."""

    ws: Workspace
    model: Model
    axcodes: tuple[str, ...]
    reference: Reference
    options: SegmentOptions
    device: str
    jobs: int


def _segment_all(context: _Context, scans: list[Scan], output: Path, on_scan_done: Callable[[Scan], None]) -> None:
    scratch = output / f".tmp-segment-{os.getpid()}-{secrets.token_hex(4)}"
    (scratch / "images").mkdir(parents=True)
    try:
        staged = _staged_ahead(scans, lambda scan: _stage(context, scan, scratch / "images"))
        if context.model.name.startswith(NNUNET_PREFIX):
            _predict_nnunet(context, staged, scans, scratch, on_scan_done)
        else:
            _predict_baseline(context, staged, on_scan_done)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _staged_ahead(scans: list[Scan], stage: Callable[[Scan], Scan]) -> Iterator[Scan]:
    """The scans, each staged (read, checked, reoriented, preprocessed) on a thread while the one before it is
    predicted: reading overlaps computing, and no process outlives the command."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage") as pool:
        queue = iter(scans)
        pending = deque(pool.submit(stage, scan) for scan in itertools.islice(queue, 2))
        while pending:
            scan = pending.popleft().result()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.submit(stage, following))
            yield scan


def _stage(context: _Context, scan: Scan, images: Path) -> Scan:
    """Read and check one scan, turn it to the model's training orientation, preprocess it as in training there
    (so every orientation of a scan gives the same input), and (nnU-Net) write it for nnU-Net to read."""
    started = time.perf_counter()
    try:
        scan.volume = read_volume(scan.input)
        scan.reorientation = towards(scan.volume.affine, context.axcodes)
        oriented = scan.volume.reoriented(scan.reorientation)
        scan.warnings = scan_warnings(oriented, context.reference)  # spacing compared axis by axis, as trained
        oblique = obliquity_degrees(scan.volume.affine)
        if oblique > OBLIQUE_DEGREES:
            scan.warnings.append(f"oblique by {oblique:.0f} degrees (more than {OBLIQUE_DEGREES:g}): segmented in "
                                 f"the nearest axis-aligned orientation, not resampled")
        scan.prepared = apply(oriented, context.reference.preprocessing)
        if context.model.name.startswith(NNUNET_PREFIX):
            scan.staged = images / f"{scan.name}_0000.nii.gz"
            write_volume(scan.prepared.with_array(scan.prepared.array.astype(np.float32)), scan.staged)
            scan.prepared = None  # on disk now
    except Exception as err:
        scan.error = _failure("reading and preparing the scan", err, scan.staged)
    scan.seconds += time.perf_counter() - started
    return scan


def _failure(what: str, err: Exception, target: Optional[Path]) -> str:
    """One scan's error: an InputError's own sentence, anything else what failed and why. A full disk is no single
    scan's fault: it stops the run (NoSpaceError naming the file written, `target` when the error names none)."""
    if isinstance(err, NoSpaceError):
        raise err
    if isinstance(err, OSError) and err.errno in FULL_DISK:
        raise no_space(err.filename or target or "the output folder") from err
    if isinstance(err, InputError):
        return str(err)
    return f"{what} failed ({type(err).__name__}: {err})"


def _predict_nnunet(context: _Context, staged: Iterator[Scan], scans: list[Scan], scratch: Path,
                    on_scan_done: Callable[[Scan], None]) -> None:
    """nnU-Net over every staged scan (the first configuration while the next scans are being staged), the
    ensemble's softmax average, postprocessing, then each map back on its input's grid."""
    from .nnunet.paths import model_folder
    from .nnunet.predict import apply_postprocessing, ensemble_folders, predict

    info, options = context.model.info, context.options
    log = scratch / "nnunet.log"
    by_image: dict[Path, Scan] = {}
    ensembled = len(info["configurations"]) > 1

    def ready() -> Iterator[Path]:
        for scan in staged:
            if scan.error:
                on_scan_done(scan)
                continue
            by_image[scan.staged] = scan
            yield scan.staged

    def timed(image: Path, seconds: float) -> None:
        by_image[image].seconds += seconds

    raw = {}
    for index, configuration in enumerate(info["configurations"]):
        raw[configuration] = scratch / f"raw-{configuration}"
        predict(context.ws, configuration, info["trainer"], folds=tuple(info["folds"]),
                images=ready() if index == 0 else list(by_image), out=raw[configuration], device=context.device,
                log=log, on_image=timed, probabilities=ensembled or options.soft_volumes, tta=bool(options.tta),
                step_size=options.step_size)
    plans_json = model_folder(context.ws, info["configurations"][0], info["trainer"]) / "plans.json"
    folder = raw[info["configurations"][0]]
    if ensembled:
        folder = scratch / "raw-ensemble"
        ensemble_folders(list(raw.values()), folder, plans_json=plans_json, jobs=context.jobs, log=log,
                         probabilities=options.soft_volumes)
    labels = scratch / "labels"
    apply_postprocessing(Path(info["postprocessing_file"]), folder, labels, plans_json=plans_json, jobs=context.jobs,
                         log=log)
    for scan in by_image.values():
        started = time.perf_counter()
        try:
            predicted = read_volume(labels / f"{scan.name}.nii.gz").array
            sums = None
            if options.soft_volumes:  # the softmax nnU-Net exported (the ensemble's average), before postprocessing
                with np.load(folder / f"{scan.name}.npz") as npz:
                    sums = npz["probabilities"].reshape(npz["probabilities"].shape[0], -1).sum(axis=1)
        except Exception as err:
            scan.error = _failure("reading nnU-Net's prediction", err, None)
            scan.volume = None
            on_scan_done(scan)
            continue
        scan.seconds += time.perf_counter() - started
        _finish(context, scan, scan.reorientation.undo(predicted.astype(np.uint8)), sums, on_scan_done)


def _predict_baseline(context: _Context, staged: Iterator[Scan], on_scan_done: Callable[[Scan], None]) -> None:
    """The baseline over each scan as soon as it is staged (already in its training orientation: it slices across
    its training axis), the map carried back onto the input's grid."""
    from baselines.infer import Predictor

    options = context.options
    predictor = Predictor(Path(context.model.info["run"]), device=context.device, overlap=1 - options.step_size,
                          tta=bool(options.tta))
    for scan in staged:
        if scan.error:
            on_scan_done(scan)
            continue
        started = time.perf_counter()
        try:
            labels, sums = predictor(scan.prepared, probabilities=options.soft_volumes)
        except Exception as err:
            scan.error = _failure("the prediction", err, None)
        scan.prepared = None
        scan.seconds += time.perf_counter() - started
        if scan.error:
            scan.volume = None
            on_scan_done(scan)
            continue
        _finish(context, scan, scan.reorientation.undo(labels), sums, on_scan_done)


def _finish(context: _Context, scan: Scan, tissue: np.ndarray, sums: Optional[np.ndarray],
            on_scan_done: Callable[[Scan], None]) -> None:
    """Write one scan's map on its input's grid, its volumes, and its QC picture; a scan that fails here keeps no
    files (a re-run redoes it whole)."""
    started = time.perf_counter()
    step = "writing the tissue map"
    try:
        if tissue.shape != scan.volume.array.shape:
            raise InputError(f"prediction shape {tissue.shape} differs from the input's {scan.volume.array.shape}")
        with atomic_path(scan.output) as tmp:
            write_volume(scan.volume.with_array(tissue), tmp)
        scan.volumes = tissue_volumes(tissue, scan.volume.spacing)
        if sums is not None:
            scan.volumes.update(soft_volumes(sums, scan.volume.spacing))
        if context.options.qc:
            step = "drawing the QC picture"
            scan.qc = qc_picture(snapshot(scan, tissue, context.model.name),
                                 scan.output.with_name(f"{scan.name}_qc.png"))
    except Exception as err:
        for made in (scan.output, scan.output.with_name(f"{scan.name}_qc.png")):
            made.unlink(missing_ok=True)
        scan.volumes, scan.qc = {}, None
        scan.error = _failure(step, err, None)
    scan.seconds += time.perf_counter() - started
    scan.volume = None  # free the voxels as we go
    on_scan_done(scan)


def soft_volumes(sums: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """mL per tissue from the model's probabilities: each class's summed probability × the voxel volume."""
    voxel_ml = float(np.prod(spacing[:3])) / 1000.0
    return {f"{name}_ml_soft": float(sums[label]) * voxel_ml for label, name in TISSUES.items()}


def snapshot(scan: Scan, tissue: np.ndarray, model: str) -> "Snapshot":
    """The scan and its map, turned to R, A, S axes for the picture, titled with the scan, model and volumes."""
    from .evaluation.qc import Snapshot

    display = towards(scan.volume.affine, ("R", "A", "S"))
    shown = scan.volume.reoriented(display)
    v = scan.volumes
    title = (f"{scan.name} — {model}\nCSF {v['CSF_ml']:.1f} mL · GM {v['GM_ml']:.1f} mL · WM {v['WM_ml']:.1f} mL · "
             f"BPF {v['BPF']:.3f}")
    return Snapshot(scan.name, np.asarray(shown.array, dtype=np.float32), display.apply(tissue), shown.spacing, title)


def qc_picture(shot: "Snapshot", target: Path) -> Path:
    from .evaluation.qc import qc_picture as draw

    return draw(shot, target)


def _draw_sheet(scans: list[Scan], target: Path, model: str) -> Optional[Path]:
    """One contact sheet of every scan with a map (a row each), redrawn from the files."""
    from .evaluation.qc import qc_sheet

    shots = []
    for scan in scans:
        if scan.error or not scan.output.is_file():
            continue
        scan.volume = read_volume(scan.input)
        tissue = read_volume(scan.output).array.astype(np.uint8)
        if not scan.volumes:
            scan.volumes = tissue_volumes(tissue, scan.volume.spacing)
        shots.append(snapshot(scan, tissue, model))
        scan.volume = None
    return qc_sheet(shots, target) if shots else None


VOLUME_COLUMNS = ["scan", "status", "input", "output", "model", "input_axcodes", "tta", "step_size", "CSF_ml", "GM_ml",
                  "WM_ml", "total_ml", "GM_fraction", "WM_fraction", "BPF", "CSF_ml_soft", "GM_ml_soft", "WM_ml_soft",
                  "qc", "seconds", "warnings", "error"]
MEASURES = ["CSF_ml", "GM_ml", "WM_ml", "total_ml", "GM_fraction", "WM_fraction", "BPF", "CSF_ml_soft", "GM_ml_soft",
            "WM_ml_soft"]


def _write_volumes_csv(scans: list[Scan], model: Model, output: Path, options: SegmentOptions) -> Path:
    """output/volumes.csv: one row a scan (reused rows as they were), status "ok" or "failed" with its error."""
    rows = []
    for s in scans:
        if s.reused is not None:
            rows.append({**s.reused, "status": "ok"})
            continue
        axes = "".join(s.reorientation.input_axcodes) if s.reorientation else ""
        rows.append({"scan": _stem(s.input), "status": "failed" if s.error else "ok", "input": str(s.input),
                     "output": "" if s.error else str(s.output), "model": model.name, "input_axcodes": axes,
                     "tta": options.tta, "step_size": options.step_size,
                     **{c: s.volumes.get(c, math.nan) for c in MEASURES}, "qc": str(s.qc) if s.qc else "",
                     "seconds": round(s.seconds, 3), "warnings": "; ".join(s.warnings), "error": s.error or ""})
    csv = output / "volumes.csv"
    with atomic_path(csv) as tmp:
        pd.DataFrame(rows, columns=VOLUME_COLUMNS).to_csv(tmp, index=False)
    return csv


class _SegmentRecord:
    """output/segment.json: for each output name, the input, its bytes' hash, the model's signature and the options
    it was made with; a re-run reuses what matches and redoes the rest."""

    FILE = "segment.json"

    def __init__(self, entries: dict[str, dict], rows: dict[str, dict]):
        self.entries, self.rows = entries, rows

    @classmethod
    def load(cls, output: Path) -> "_SegmentRecord":
        entries = read_json_or_none(output / cls.FILE)
        if not isinstance(entries, dict):
            return cls({}, {})
        try:
            table = pd.read_csv(output / "volumes.csv", keep_default_na=False, dtype={"input_axcodes": str})
            rows = {row["output"]: row for row in table.to_dict(orient="records") if row.get("output")}
        except (OSError, ValueError):
            return cls({}, {})
        return cls(entries, rows)

    def _wanted(self, scan: Scan, signature: str, options: SegmentOptions) -> dict:
        return {"input": str(scan.input.absolute()), "input_sha256": input_signature(scan.input), "model": signature,
                "tta": options.tta, "step_size": options.step_size, "soft_volumes": options.soft_volumes,
                "qc": options.qc}

    def reusable(self, scan: Scan, signature: str, options: SegmentOptions) -> Optional[dict]:
        entry = self.entries.get(scan.name)
        row = self.rows.get(str(scan.output))
        if entry is None or row is None or not scan.output.is_file():
            return None
        if options.qc and not scan.output.with_name(f"{scan.name}_qc.png").is_file():
            return None
        return row if entry == self._wanted(scan, signature, options) else None

    def update(self, scans: list[Scan], signature: str, options: SegmentOptions) -> None:
        for scan in scans:
            if scan.error:
                self.entries.pop(scan.name, None)
            elif scan.reused is None:
                self.entries[scan.name] = self._wanted(scan, signature, options)

    def save(self, output: Path) -> None:
        write_json(output / self.FILE, self.entries)
