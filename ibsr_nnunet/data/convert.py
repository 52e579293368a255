"""Convert an IBSR18 source tree into nnU-Net v2's raw layout — atomically, and refusing anything that would train a
wrong problem."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from .. import __version__
from ..core import checksums
from ..core.atomic import swap_in, write_json
from ..core.checksums import file_record, sha256
from ..core.environment import available_cores
from ..core.errors import InputError
from ..core.locks import Lock, lock_path
from ..core.manifest import Manifest, ManifestCase, Split, parse_case, read_manifest_if_any, write_manifest
from ..core.orientation import common_axcodes
from ..core.provenance import stale_artifacts
from ..core.vocabulary import NNUNET_LABELS
from ..core.workspace import Workspace
from ..nnunet import integrity
from ..nnunet.plans import write_splits
from . import preprocess, volumes
from .labels import (
    LabelScheme,
    apply_scheme,
    detect_scheme,
    integral_labels,
    mapped_counts,
    require_all_tissues,
    value_counts,
)
from .layouts import Subject, find_subjects
from .splits import SPLIT_SEED, cross_validation_folds, heldout_subset

ROLE_FOLDERS = {"train": ("imagesTr", "labelsTr"), "heldout": ("imagesTs", "labelsTs"), "test": ("imagesTs", None)}
RECORDED_PACKAGES = ("ibsr-nnunet", "nnunetv2", "torch", "SimpleITK", "nibabel", "numpy")


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: which dataset ID, layout, label coding and preprocessing; how many processes."""

    dataset_id: int = 501
    layout: str = "auto"
    label_map: Optional[LabelScheme] = None
    fill: bool = False
    preprocessing: preprocess.Preprocessing = field(default_factory=preprocess.Preprocessing)
    heldout_fraction: float = 0.2
    jobs: int = 0  # 0: all available cores
    force: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise InputError(f"--jobs {self.jobs} is negative; pass a positive number of processes (0 = all cores).")
        if not 0 < self.heldout_fraction < 1:
            raise InputError(f"held-out fraction {self.heldout_fraction} must lie between 0 and 1.")


@dataclass(frozen=True)
class CaseJob:
    """One subject to convert, with the files to write in the dataset being built."""

    subject: Subject
    role: str
    image_out: Path
    label_out: Optional[Path]
    label_map: Optional[LabelScheme]
    preprocessing: preprocess.Preprocessing


@dataclass
class ConvertResult:
    dataset: Path
    manifest: Manifest
    up_to_date: bool  # nothing was written: the dataset already matched these inputs
    seconds: dict[str, float]  # wall time of the case conversions and of nnU-Net's integrity check


def _source_files(path: Path) -> list[Path]:
    """The files that hold one volume: Analyze keeps its header beside the voxels."""
    if path.suffix == ".img":
        return [path.with_suffix(".hdr"), path]
    return [path]


def _file_record(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    return {"path": str(path.absolute()), "sha256": "".join(sha256(p) for p in _source_files(path) if p.exists())}


def convert_case(job: CaseJob) -> dict:
    """Validate, map and write one subject; returns its manifest entry. Runs in a worker process."""
    image_path = job.subject.image
    image = volumes.read_volume(image_path)
    case = {
        "id": job.subject.subject_id,
        "role": job.role,
        "shape": list(image.array.shape),
        "spacing": list(image.spacing),
        "affine": image.affine.round(6).tolist(),
        "label_scheme": None,
        "label_counts": None,
    }
    if job.label_out is not None:
        label_path = job.subject.label
        label = volumes.read_volume(label_path)
        volumes.require_same_grid(image, label, image_path, label_path=label_path)
        source_labels = integral_labels(label.array, str(label_path))
        source_counts = value_counts(source_labels)
        scheme = detect_scheme(source_counts, str(label_path), job.label_map)
        counts = mapped_counts(source_counts, scheme)
        require_all_tissues(counts, str(label_path))
        # the image's header, so nnU-Net sees identical geometry in both files
        volumes.write_volume(image.with_array(apply_scheme(source_labels, scheme)), job.label_out)
        case["label_scheme"] = {"name": scheme.name, "mapping": {str(k): v for k, v in scheme.mapping.items()}}
        case["label_counts"] = {str(k): counts.get(k, 0) for k in sorted(NNUNET_LABELS.values())}
    volumes.write_volume(preprocess.apply(image, job.preprocessing), job.image_out)
    # hashed here, in parallel, so that later checks can tell a hand edit from what convert wrote
    case["written"] = {_inside_dataset(path): file_record(path) for path in (job.image_out, job.label_out) if path}
    return case


def _inside_dataset(path: Path) -> str:
    """A written case file's path inside the dataset folder, e.g. labelsTs/IBSR_06.nii.gz."""
    return f"{path.parent.name}/{path.name}"


def assign_roles(subjects: list[Subject], heldout_fraction: float) -> tuple[dict[str, str], str]:
    """Subject ID -> train/heldout/test, and the held-out policy in words."""
    roles = {s.subject_id: s.split for s in subjects}
    if any(role == "heldout" for role in roles.values()):
        return roles, "source Validation_Set held out"
    train_ids = [sid for sid, role in roles.items() if role == "train"]
    for sid in heldout_subset(train_ids, heldout_fraction):
        roles[sid] = "heldout"
    return roles, f"deterministic held-out subset of the labelled subjects ({heldout_fraction:.0%}, seed {SPLIT_SEED})"


def _fingerprint(layout: str, subjects: list[Subject], roles: dict[str, str], options: ConvertOptions,
                 files: dict[str, tuple[Optional[dict], Optional[dict]]]) -> str:
    identity = {
        "version": __version__,
        "layout": layout,
        "fill": options.fill,
        "label_map": options.label_map.mapping if options.label_map else None,
        "preprocessing": options.preprocessing.as_record(),
        "cases": [
            [s.subject_id, roles[s.subject_id], files[s.subject_id][0]["sha256"],
             files[s.subject_id][1]["sha256"] if files[s.subject_id][1] else None]
            for s in subjects
        ],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def dataset_json(num_training: int) -> dict:
    """nnU-Net's dataset.json for IBSR18: one T1 channel, background + three tissues, no regions."""
    return {
        "channel_names": {"0": "T1"},
        "labels": dict(NNUNET_LABELS),
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "name": "IBSR18",
        "description": "IBSR18 T1 brain MRI, tissue labels CSF/GM/WM (converted by ibsr-nnunet)",
    }


def _package_versions() -> dict[str, Optional[str]]:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _remove_stale_builds(raw_root: Path, name: str) -> None:
    """Drop temporary folders a crashed conversion of this dataset left behind."""
    for stale in raw_root.glob(f".tmp-{name}-*"):
        pid = stale.name.split("-")[-2]
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            shutil.rmtree(stale, ignore_errors=True)


def _convert_cases(jobs: list[CaseJob], processes: int, on_case_done: Callable[[str], None],
                   while_workers_run: Callable[[], object] = lambda: None) -> list[dict]:
    """Convert every case, in parallel; the first bad case cancels the rest and raises its error.
    `while_workers_run` is called once the workers exist (forking after it could copy a busy thread's locks)."""
    if processes <= 1:
        converted = []
        for job in jobs:
            converted.append(convert_case(job))
            on_case_done(job.subject.subject_id)
        return converted
    # fork: workers start in milliseconds and inherit the imports; they only run SimpleITK/numpy I/O.
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("fork")) as pool:
        pending = {pool.submit(convert_case, job): job for job in jobs}  # fork pools start every worker here
        while_workers_run()
        converted = []
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                job = pending.pop(future)
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                converted.append(future.result())
                on_case_done(job.subject.subject_id)
    return converted


def convert(source: str | os.PathLike, ws: Workspace, options: ConvertOptions = ConvertOptions(), *,
            on_start: Callable[[int], None] = lambda n: None,
            on_case_done: Callable[[str], None] = lambda case: None,
            on_replace: Callable[[dict[str, list[Path]]], None] = lambda stale: None) -> ConvertResult:
    """Write `ws`'s Dataset<ID>_IBSR18 from `source`; a no-op when it already holds exactly these inputs.

    One convert at a time per dataset ID (a lock). Before another dataset replaces the current one (`--force`),
    `on_replace` gets the results it makes stale, by kind."""
    source = Path(source).absolute()
    ws = Workspace(ws.root, options.dataset_id)
    ws.ensure_writable()
    inputs = _conversion_inputs(source, options)
    with Lock(lock_path(ws.raw_dataset), f"dataset {ws.dataset_name}", f"ibsr-nnunet convert {source}"):
        existing = _up_to_date_manifest(ws, inputs.fingerprint, options)
        if existing is not None:
            return ConvertResult(ws.raw_dataset, existing, up_to_date=True, seconds={})
        if ws.raw_dataset.exists() and getattr(read_manifest_if_any(ws.raw_dataset), "fingerprint",
                                               None) != inputs.fingerprint:
            on_replace({kind: found for kind, found in stale_artifacts(ws, inputs.fingerprint).items() if found})
        return _write_dataset(ws, inputs, options, on_start, on_case_done)


def _write_dataset(ws: Workspace, inputs: "_ConversionInputs", options: ConvertOptions,
                   on_start: Callable[[int], None], on_case_done: Callable[[str], None]) -> ConvertResult:
    """Build the dataset in a temporary sibling folder, then swap it in: readers see the old one or the new one."""
    _remove_stale_builds(ws.nnunet_raw, ws.dataset_name)
    build = ws.nnunet_raw / f".tmp-{ws.dataset_name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        manifest, folds, seconds = _build_dataset(build, ws, inputs, options, on_start, on_case_done)
        swap_in(build, ws.raw_dataset)
    finally:
        shutil.rmtree(build, ignore_errors=True)

    # nnU-Net reads the folds from the preprocessed folder; a replaced dataset gets its new folds there too.
    write_splits(ws.preprocessed_dataset, folds)
    ws.record_dataset_id()
    return ConvertResult(ws.raw_dataset, manifest, up_to_date=False, seconds=seconds)


@dataclass(frozen=True)
class _ConversionInputs:
    """What a conversion found and decided before writing anything."""

    source: Path
    layout: str
    subjects: list[Subject]
    roles: dict[str, str]
    policy: str  # the held-out policy in words
    files: dict[str, tuple[Optional[dict], Optional[dict]]]  # subject ID -> (image, label) file records
    fingerprint: str


def _conversion_inputs(source: Path, options: ConvertOptions) -> _ConversionInputs:
    """Find the subjects, give each its role, hash their files and fingerprint the whole conversion."""
    layout, subjects = find_subjects(source, options.layout, options.fill)
    roles, policy = assign_roles(subjects, options.heldout_fraction)
    files = {s.subject_id: (_file_record(s.image), _file_record(s.label if roles[s.subject_id] != "test" else None))
             for s in subjects}
    fingerprint = _fingerprint(layout, subjects, roles, options, files)
    return _ConversionInputs(source, layout, subjects, roles, policy, files, fingerprint)


def _up_to_date_manifest(ws: Workspace, fingerprint: str, options: ConvertOptions) -> Optional[Manifest]:
    """The manifest of a dataset already built from these inputs and unchanged since, else None; refuses unforced to
    replace another dataset or to rewrite files changed since they were written."""
    existing = read_manifest_if_any(ws.raw_dataset)
    if ws.raw_dataset.exists():
        if existing is not None and existing.fingerprint == fingerprint:
            changed = checksums.changes(ws, existing)
            if not changed:
                return existing
            if options.force:
                return None
            raise InputError(f"{ws.raw_dataset} was changed since convert wrote it: {'; '.join(changed)}; pass "
                             f"--force to convert it again from the source.")
        if not options.force:
            raise InputError(
                f"{ws.raw_dataset} already holds a different dataset (other sources or options); "
                f"pass --force to replace it, or --dataset-id with a free ID."
            )
    return None


def _case_jobs(build: Path, inputs: _ConversionInputs, options: ConvertOptions) -> list[CaseJob]:
    """One job per subject, writing into its role's image (and label) folder of `build`."""
    jobs = []
    for subject in inputs.subjects:
        role = inputs.roles[subject.subject_id]
        image_folder, label_folder = ROLE_FOLDERS[role]
        jobs.append(CaseJob(
            subject=subject, role=role,
            image_out=build / image_folder / f"{subject.subject_id}_0000.nii.gz",
            label_out=build / label_folder / f"{subject.subject_id}.nii.gz" if label_folder else None,
            label_map=options.label_map, preprocessing=options.preprocessing,
        ))
    return jobs


def _build_dataset(build: Path, ws: Workspace, inputs: _ConversionInputs, options: ConvertOptions,
                   on_start: Callable[[int], None],
                   on_case_done: Callable[[str], None]) -> tuple[Manifest, list[dict], dict[str, float]]:
    """Convert every case into `build`, write its JSON files and have nnU-Net check it; (manifest, folds, seconds)."""
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (build / folder).mkdir(parents=True)
    jobs = _case_jobs(build, inputs, options)
    on_start(len(jobs))
    processes = min(options.jobs or available_cores(), len(jobs))
    started = time.perf_counter()
    preload = []
    converted = _convert_cases(jobs, processes, on_case_done, lambda: preload.append(integrity.preload_in_background()))
    converted.sort(key=lambda r: r["id"])
    seconds = {"cases": time.perf_counter() - started}
    written = {}
    for case in converted:
        case["image"], case["label"] = inputs.files[case["id"]]
        written.update(case.pop("written"))

    ids = {role: [r["id"] for r in converted if r["role"] == role] for role in ("train", "heldout", "test")}
    folds = cross_validation_folds(ids["train"])
    write_json(build / "dataset.json", dataset_json(len(ids["train"])))
    splits = write_splits(build, folds)
    written.update({path.name: file_record(path) for path in (build / "dataset.json", splits)})
    manifest = _manifest(ws, inputs, options, converted, ids, len(folds), dict(sorted(written.items())))
    write_manifest(build, manifest)
    started = time.perf_counter()
    for thread in preload:
        thread.join()
    integrity.verify_dataset(build, processes)
    seconds["integrity_check"] = time.perf_counter() - started
    return manifest, folds, seconds


def _manifest(ws: Workspace, inputs: _ConversionInputs, options: ConvertOptions, converted: list[dict],
              ids: dict[str, list[str]], n_folds: int, files: dict[str, dict]) -> Manifest:
    """The manifest: where the dataset came from, how it was converted, its split, every case and written file."""
    cases: tuple[ManifestCase, ...] = tuple(parse_case(case) for case in converted)
    return Manifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        fingerprint=inputs.fingerprint,
        dataset=ws.dataset_name,
        source=str(inputs.source),
        layout=inputs.layout,
        label_files=("segTRI_fill" if options.fill else "segTRI") if inputs.layout != "misa" else "seg",
        label_map=options.label_map.describe() if options.label_map else "auto",
        preprocessing=options.preprocessing.as_record(),
        split=Split(inputs.policy, *(tuple(ids[role]) for role in ("train", "heldout", "test")), folds=n_folds),
        orientation=common_axcodes([r["affine"] for r in converted if r["role"] == "train"]),
        cases=cases,
        files=files,
        versions=_package_versions(),
    )
