"""Segment new T1 scans with any trained model of the workspace, and measure their CSF, GM and WM volumes."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..core.atomic import FULL_DISK, NoSpaceError, atomic_path, no_space
from ..core.errors import InputError
from ..core.locks import Lock, lock_path
from ..core.manifest import read_manifest
from ..core.orientation import OBLIQUE_DEGREES, obliquity_degrees
from ..core.oriented import Carried, predict_oriented
from ..core.workspace import Workspace
from ..data.preprocess import apply
from ..data.volumes import Volume, read_volume, write_volume
from ..models import PredictSettings, TrainedModel
from . import qc
from .choice import Chosen, choose_model
from .inputs import collect_inputs, output_names
from .measures import soft_volumes, tissue_volumes
from .options import SegmentOptions
from .quality import TrainingVolumes, assess, training_volumes
from .record import SegmentRecord, write_volumes_csv
from .reference import scan_warnings, training_reference
from .scans import Scan, ScanOutcome, brain_mask_path
from .strip import BrainExtractor, Stripped, require_deepbet

STAGED_AHEAD = 2  # scans read and prepared on a thread while the one before them is predicted


@dataclass(frozen=True)
class SegmentResult:
    model: Chosen
    scans: list[ScanOutcome]
    csv: Path
    sheet: Optional[Path] = None

    @property
    def failed(self) -> list[ScanOutcome]:
        return [s for s in self.scans if s.error]

    @property
    def reused(self) -> list[ScanOutcome]:
        return [s for s in self.scans if s.reused is not None]


def segment(ws: Workspace, inputs: list[Path], output: Path, *, model_name: Optional[str] = None,
            device: str = "auto", jobs: int = 1, options: SegmentOptions = SegmentOptions(),
            on_start: Callable[[Chosen, int], None] = lambda m, n: None,
            on_scan_done: Callable[[ScanOutcome], None] = lambda s: None) -> SegmentResult:
    """Stage each scan (reoriented to the model's training orientation, preprocessed as in training), predict,
    carry the map back and write `<name>_tissue.nii.gz` on each input's exact grid, a QC picture, and volumes.csv.

    A scan that fails (unreadable, its prediction or its QC picture) is reported in its row, leaves no files, and
    the others go on; a full disk stops the run in one sentence. Scans already segmented with the same input bytes,
    model and options are not redone.
    """
    output = Path(output)
    if options.strip:
        require_deepbet()
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; pass a folder (it is created if missing).")
    files = collect_inputs(inputs, exclude=output)
    manifest = read_manifest(ws)  # once: the model, the reference and the choice all read it from here
    chosen = choose_model(ws, model_name, manifest)
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
            return _segment_locked(ws, chosen, scans, output, device, jobs, options, on_start, on_scan_done)
    except OSError as err:  # the lock file, or a write that names no file of ours
        if err.errno not in FULL_DISK:
            raise
        raise no_space(err.filename or output) from err
    finally:
        if created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # refused before anything was written (a model that cannot be loaded): leave no trace


def _segment_locked(ws: Workspace, chosen: Chosen, scans: list[Scan], output: Path, device: str, jobs: int,
                    options: SegmentOptions, on_start: Callable[[Chosen, int], None],
                    on_scan_done: Callable[[ScanOutcome], None]) -> SegmentResult:
    """`segment` while it holds the output folder: reuse what is current, segment the rest, write the tables."""
    model = chosen.model
    signature = model.signature()
    record = SegmentRecord.load(output)
    outcomes: dict[str, ScanOutcome] = {}
    todo = []
    for scan in scans:
        reused = record.reusable(scan, signature, options)
        if reused is None:
            todo.append(scan)
        else:
            outcomes[scan.name] = ScanOutcome(scan, reused=reused)
    on_start(chosen, len(scans))
    for outcome in outcomes.values():
        on_scan_done(outcome)
    if todo:
        for outcome in _segment_all(ws, model, todo, output, device, jobs, options):
            outcomes[outcome.name] = outcome
            on_scan_done(outcome)
    ordered = [outcomes[scan.name] for scan in scans]
    record.update(ordered, signature, options)
    csv = write_volumes_csv(ordered, model.name, output, options)
    record.save(output)
    sheet = None
    if options.qc_sheet:
        done = sorted((s for s in ordered if not s.error), key=lambda s: s.quality_score)  # the lowest score first
        sheet = qc.draw_sheet([(s.name, s.input, s.output, s.volumes) for s in done], output / "qc_sheet.png",
                              model.name)
    return SegmentResult(chosen, ordered, csv, sheet)


def _segment_all(ws: Workspace, model: TrainedModel, scans: list[Scan], output: Path, device: str, jobs: int,
                 options: SegmentOptions) -> Iterator[ScanOutcome]:
    """Each scan read, turned to the model's training orientation, checked and preprocessed there as in training
    (so every orientation of a scan gives the same input) a few scans ahead, predicted, and finished on its input's
    grid."""
    reference = training_reference(ws, model.manifest)
    expected = training_volumes(ws, model.manifest)
    extractor = BrainExtractor(device) if options.strip else None
    scratch = output / f".tmp-segment-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir(parents=True)
    warnings: dict[str, list[str]] = {}
    brains: dict[str, Stripped] = {}  # by scan, on the training orientation's grid

    def prepare(name: str, oriented: Volume) -> Volume:
        found = warnings.setdefault(name, [])
        if extractor is not None:
            brains[name] = extractor(oriented)
            oriented = oriented.with_array(np.where(brains[name].mask, oriented.array, 0).astype(oriented.array.dtype))
        found += scan_warnings(oriented, reference)  # spacing compared axis by axis, as trained
        oblique = obliquity_degrees(oriented.affine)  # turning permutes and flips axes: the same obliquity
        if oblique > OBLIQUE_DEGREES:
            found.append(f"oblique by {oblique:.0f} degrees (more than {OBLIQUE_DEGREES:g}): segmented in the nearest "
                         f"axis-aligned orientation, not resampled")
        return apply(oriented, model.preprocessing)

    settings = PredictSettings(device=device, tta=bool(options.tta), step_size=options.step_size,
                               probabilities=True, jobs=jobs, scratch=scratch,  # probabilities: the confidence
                               resample=options.resample)
    by_name = {scan.name: scan for scan in scans}
    try:
        inputs = [(scan.name, partial(read_volume, scan.input)) for scan in scans]
        for carried in predict_oriented(inputs, model.axcodes, lambda turned: model.predict(turned, settings),
                                        prepare=prepare, ahead=STAGED_AHEAD):
            yield _finish(carried, by_name[carried.key], tuple(warnings.pop(carried.key, ())), model.name, options,
                          brains.pop(carried.key, None), expected)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


def _finish(carried: Carried[Volume], scan: Scan, warnings: tuple[str, ...], model: str,
            options: SegmentOptions, brain: Optional[Stripped], expected: TrainingVolumes) -> ScanOutcome:
    """Write one scan's map on its input's grid, its brain mask when stripped, its volumes and QC score, and its QC
    picture; a scan that fails here keeps no files (a re-run redoes it whole)."""
    axes = "".join(carried.reorientation.input_axcodes) if carried.reorientation else ""
    seconds = carried.seconds
    if carried.error is not None:
        return ScanOutcome(scan, seconds, warnings, _failure("reading and preparing the scan", carried.error, None),
                           input_axcodes=axes)
    predicted = carried.prediction
    seconds += predicted.seconds
    if predicted.error is not None:
        return ScanOutcome(scan, seconds, warnings, _failure(predicted.step, predicted.error, None),
                           input_axcodes=axes)
    started = time.perf_counter()
    step = "writing the tissue map"
    volume, tissue = carried.original, predicted.labels
    picture = scan.output.with_name(f"{scan.name}_qc.png")
    mask_file = brain_mask_path(scan)
    try:
        if tissue.shape != volume.array.shape:
            raise InputError(f"prediction shape {tissue.shape} differs from the input's {volume.array.shape}")
        mask = None if brain is None else carried.reorientation.undo(brain.mask)
        if mask is not None:
            tissue = np.where(mask, tissue, 0).astype(tissue.dtype)  # nothing outside the brain is brain tissue
        with atomic_path(scan.output) as tmp:
            write_volume(volume.with_array(tissue), tmp)
        volumes = tissue_volumes(tissue, volume.spacing)
        if predicted.sums is not None and options.soft_volumes:
            volumes.update(soft_volumes(predicted.sums, volume.spacing))
        if mask is not None:
            step = "writing the brain mask"
            with atomic_path(mask_file) as tmp:
                write_volume(volume.with_array(mask.astype(np.uint8)), tmp)
            volumes["tiv_ml"] = brain.tiv_ml
        quality = assess(volumes, predicted.confidence, warnings, expected)
        drawn = None
        if options.qc:
            step = "drawing the QC picture"
            drawn = qc.qc_picture(qc.snapshot(scan.name, volume, tissue, volumes, model, mask, quality.score),
                                  picture)
    except Exception as err:
        for made in (scan.output, picture, mask_file):
            made.unlink(missing_ok=True)
        return ScanOutcome(scan, seconds + time.perf_counter() - started, warnings, _failure(step, err, None),
                           input_axcodes=axes)
    return ScanOutcome(scan, seconds + time.perf_counter() - started, warnings, None, volumes, None, drawn, axes,
                       quality)
