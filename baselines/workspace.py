"""The baselines inside an ibsr-nnunet workspace: one writer per run and prediction set, nothing used from a run
that is still training, and nothing reused that was made from another dataset or from other weights."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ibsr_nnunet.core.durable import DurableRun, TrainOutcome
from ibsr_nnunet.core.locks import Lock, current_holder, lock_path
from ibsr_nnunet.core.manifest import Manifest, read_manifest
from ibsr_nnunet.core.provenance import (
    archive_stale_outputs,
    ensure_current,
    recorded_weights,
    staleness,
    weights_changed,
    weights_signature,
    write_provenance,
)
from ibsr_nnunet.core.tracking import Tracking, tracked_run_id
from ibsr_nnunet.core.workspace import Workspace

from .data import view_axis
from .infer import predict_files
from .options import TrainOptions
from .registry import THICKEST, train_options_of
from .run_folder import TrainingOrientation, best_weights_path, run_dir, run_finished, write_orientation
from .tracking import EpochTracker
from .train import train


def train_in_workspace(ws: Workspace, options: TrainOptions, *, archive_stale: bool = False,
                       on_epoch: Optional[Callable[[dict], None]] = None,
                       on_iteration: Optional[Callable[[], None]] = None,
                       on_start: Optional[Callable[[int, Optional[int]], None]] = None,
                       tracking: Tracking = Tracking(), say: Callable[[str], None] = print) -> TrainOutcome:
    """Train (or resume) the run of `options.model` + `options.loss` on the workspace's training cases: a durable
    run (core/durable.py) of the run folder, under its lock, refused while made from another dataset. With
    `tracking`, its epochs go to one W&B run per run folder and dataset (tracking.py), resumed runs included."""
    tracking.require()
    folder = run_dir(ws, options.model, options.loss, options.view)
    with DurableRun(folder, what=f"baseline run {folder.name}", history="baseline train", say=say,
                    command=f"ibsr-nnunet baseline train {train_options_of(folder.name)}") as run:
        manifest = read_manifest(ws)
        fingerprint = manifest.fingerprint
        run.acquire()
        ensure_current(ws, folder, what=f"baseline run {folder.name}", fingerprint=fingerprint,
                       archive_stale=archive_stale, say=say)
        run.record_provenance(fingerprint, model=options.model, loss=options.loss, view=options.view)
        write_orientation(folder, training_orientation(manifest, options.view))
        run_id = tracked_run_id(folder, fingerprint)
        with EpochTracker(tracking, folder, run_id, {"model": options.model, "loss": options.loss,
                                                     "view": options.view,
                                                     "dataset_fingerprint": fingerprint}) as tracker:

            def logged(row: dict) -> None:
                tracker.log(row)
                if on_epoch is not None:
                    on_epoch(row)

            return train(folder, ws.cases("train", manifest), options, on_epoch=logged, on_iteration=on_iteration,
                         on_start=on_start, durable=run, tracked=tracking.record(run_id))


def training_orientation(manifest: Manifest, view: str = THICKEST) -> TrainingOrientation:
    """The axis codes of the dataset's training images, the axis 2D models of `view` slice across in that
    orientation (by default the one with the largest spacing: IBSR's 1.5 mm coronal axis), and their median
    spacing there."""
    spacing = manifest.training_spacing
    return TrainingOrientation(manifest.training_axcodes, view_axis(view, manifest.training_axcodes, spacing),
                               spacing, view)


def unfinished(run: Path) -> Optional[str]:
    """None when the baseline run's training has finished and nobody trains it now; else why it cannot be used yet
    and what to do, as a clause ("is being trained ...: wait for it to finish")."""
    holder = current_holder(lock_path(run))
    if holder is not None:
        return f"is being trained right now by {holder.describe()}: wait for it to finish"
    if not run_finished(run):
        return (f"has not finished training (its run.json does not say finished): run `ibsr-nnunet baseline train "
                f"{train_options_of(run.name)}` with the options it was started with to finish it")
    return None


def predict_in_workspace(ws: Workspace, name: str, *, device: str = "auto", overlap: float = 0.5,
                         on_case: Optional[Callable[[str, bool], None]] = None,
                         say: Callable[[str], None] = print) -> Path:
    """Predict every held-out and test case into <workspace>/predictions/<name>/ with the run `name` the model
    interface says is ready (models/baseline.py `refusal`: trained, on this dataset, finished, nobody training it);
    predictions made from another dataset are moved to the archive and redone, those made with other weights are
    redone. The set records the signature of the weights (best.pt) it came from."""
    manifest = read_manifest(ws)
    fingerprint = manifest.fingerprint
    run = ws.baselines / name
    out = ws.predictions / run.name
    cases = [(case.id, case.image) for role in ("heldout", "test") for case in ws.cases(role, manifest)]
    with Lock(lock_path(out), f"prediction set {out.name}", f"ibsr-nnunet baseline predict {train_options_of(name)}",
              say=say):
        stale = staleness(out, fingerprint)
        if stale:  # moved aside, never overwritten: every case is predicted again
            archive_stale_outputs(ws, [out], what=f"prediction set {out.name}", why=stale, say=say)
        elif (earlier := recorded_weights(out)) is not None and (changed := weights_changed(ws, earlier)):
            stale = f"predicted with other weights: {changed}"
            say(f"{out} was {stale}: predicting every case again")
        predict_files(run, cases, out, device=device, overlap=overlap, reuse=stale is None, on_case=on_case)
        # a finished run nobody trains: its best.pt is still the file the predictions were made with
        write_provenance(out, fingerprint, model=run.name, run=str(run),
                         weights=weights_signature(ws, [best_weights_path(run)]))
    return out
