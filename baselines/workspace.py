"""The baselines inside an ibsr-nnunet workspace: one writer per run and prediction set, and nothing reused that
was made from another dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ibsr_nnunet.core.atomic import write_json
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.orientation import training_axcodes
from ibsr_nnunet.core.locks import Lock, LockedError, lock_path
from ibsr_nnunet.core.provenance import (archive_stale_outputs, dataset_fingerprint, ensure_current, record,
                                         staleness)
from ibsr_nnunet.core.runlog import record_locked
from ibsr_nnunet.core.signals import StopSignals
from ibsr_nnunet.core.workspace import Workspace

from .data import slicing_axis
from .infer import ORIENTATION, predict_files
from .train import TrainOptions, TrainResult, run_dir, train


def train_in_workspace(ws: Workspace, options: TrainOptions, *, archive_stale: bool = False,
                       on_epoch: Optional[Callable[[dict], None]] = None,
                       on_iteration: Optional[Callable[[], None]] = None,
                       on_start: Optional[Callable[[int, Optional[int]], None]] = None,
                       say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) the run of `options.model` + `options.loss` on the workspace's training cases."""
    with StopSignals() as stop:  # SIGUSR1/SIGTERM from the start on: saved and stopped, never lost
        return _train_locked(ws, options, archive_stale=archive_stale, on_epoch=on_epoch, on_iteration=on_iteration,
                             on_start=on_start, say=say, stop=stop)


def _train_locked(ws: Workspace, options: TrainOptions, *, archive_stale: bool, on_epoch, on_iteration, on_start,
                  say: Callable[[str], None], stop: StopSignals) -> TrainResult:
    """train_in_workspace under the run folder's lock; a run refused by the lock is recorded in runs.jsonl."""
    fingerprint = dataset_fingerprint(ws)
    folder = run_dir(ws, options.model, options.loss)
    try:
        with Lock(lock_path(folder), f"baseline run {folder.name}",
                  f"ibsr-nnunet baseline train --model {options.model} --loss {options.loss}", say=say):
            ensure_current(ws, folder, what=f"baseline run {folder.name}", fingerprint=fingerprint,
                           archive_stale=archive_stale, say=say)
            folder.mkdir(parents=True, exist_ok=True)
            record(folder, fingerprint, model=options.model, loss=options.loss)
            write_json(folder / ORIENTATION, training_orientation(ws))
            return train(folder, ws.cases("train"), options, on_epoch=on_epoch, on_iteration=on_iteration,
                         on_start=on_start, stop=stop)
    except LockedError:
        record_locked(folder, "baseline train")  # our own history: this run was refused
        raise


def training_orientation(ws: Workspace) -> dict:
    """The axis codes of the workspace's training images, and the axis 2D models slice across in that orientation
    (the one with the largest spacing: IBSR's 1.5 mm coronal axis)."""
    manifest = ws.read_manifest()
    train = [case for case in manifest["cases"] if case["role"] == "train"]
    spacing = np.median([case["spacing"] for case in train], axis=0)
    return {"axcodes": list(training_axcodes(manifest)), "slicing_axis": slicing_axis(spacing)}


def predict_in_workspace(ws: Workspace, model: str, loss: str, *, device: str = "auto", overlap: float = 0.5,
                         on_case: Optional[Callable[[str, bool], None]] = None,
                         say: Callable[[str], None] = print) -> Path:
    """Predict every held-out and test case into <workspace>/predictions/<model>__<loss>/; predictions made from
    another dataset are moved to the archive and redone, a run trained on another dataset is refused."""
    fingerprint = dataset_fingerprint(ws)
    run = run_dir(ws, model, loss)
    why = staleness(run, fingerprint)
    if why:
        raise InputError(f"{run} (baseline run) is stale: {why}; train it again with `ibsr-nnunet baseline train "
                         f"--model {model} --loss {loss} --archive-stale`, then predict.")
    out = ws.predictions / run.name
    cases = [(case.id, case.image) for role in ("heldout", "test") for case in ws.cases(role)]
    with Lock(lock_path(out), f"prediction set {out.name}", f"ibsr-nnunet baseline predict --model {model} "
              f"--loss {loss}", say=say):
        stale = staleness(out, fingerprint)
        if stale:  # moved aside, never overwritten: every case is predicted again
            archive_stale_outputs(ws, [out], what=f"prediction set {out.name}", why=stale, say=say)
        predict_files(run, cases, out, device=device, overlap=overlap, reuse=True, on_case=on_case)
        record(out, fingerprint, model=run.name, run=str(run))
    return out
