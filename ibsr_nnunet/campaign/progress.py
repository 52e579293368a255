"""Where a fold or a baseline stands, read from the files training writes (no torch, no SLURM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from baselines.run_folder import EpochRow, read_log, read_run_record

from ..core.errors import InputError
from ..core.runlog import Run, read_runs
from ..core.workspace import Workspace
from ..models.nnunet import fold_curve
from ..nnunet.fold import fold_finished, log_epochs, logs, validation_dice

RECENT_EPOCHS = 20  # seconds_per_epoch: the median of this many latest epochs on the current device


@dataclass
class Progress:
    epochs_done: int = 0
    pseudo_dice: Optional[float] = None
    val_loss: Optional[float] = None
    validation_dice: Optional[float] = None  # mean foreground Dice of nnU-Net's final validation
    finished: bool = False
    runs: list[Run] = field(default_factory=list)  # runs.jsonl
    epoch_seconds: list[float] = field(default_factory=list)  # recent finished epochs on the current device


def current_device(runs: list[Run]) -> Optional[str]:
    """The device model of the latest run that recorded one."""
    names = [run.start.get("device_name") for run in runs if run.start.get("device_name")]
    return names[-1] if names else None


def _fold_epoch_seconds(folder: Path, runs: list[Run]) -> list[float]:
    """Durations of the latest epochs on the current device, from the training log each run recorded (every log
    when no run recorded one: a fold trained by nnU-Net's own command)."""
    device = current_device(runs)
    recorded = [run.start["log"] for run in runs if run.start.get("log") and run.start.get("device_name") == device]
    paths = [folder / log for log in recorded] if recorded else logs(folder)
    return [e.seconds for path in paths for e in log_epochs(path) if e.finished][-RECENT_EPOCHS:]


def fold_progress(folder: Path, epochs: int) -> Progress:
    """Read progress from nnU-Net's own files (training logs, validation summary) and runs.jsonl: no torch needed."""
    progress = Progress(finished=fold_finished(folder), runs=read_runs(folder))
    progress.epoch_seconds = _fold_epoch_seconds(folder, progress.runs)
    curve = fold_curve(folder)
    completed = curve.dropna(subset=["train_loss"])  # an epoch's losses are logged when it ends
    progress.epochs_done = epochs if progress.finished else (int(completed["epoch"].max()) + 1 if len(completed) else 0)
    for column, attribute in (("pseudo_dice", "pseudo_dice"), ("val_loss", "val_loss")):
        values = curve[column].dropna()
        if len(values):
            setattr(progress, attribute, float(values.iloc[-1]))
    progress.validation_dice = validation_dice(folder)
    return progress


def baseline_progress(ws: Workspace, name: str) -> Progress:
    """From the baseline's own run record and log (baselines/run_folder.py; training rewrites them at every save)."""
    folder = ws.baselines / name
    progress = Progress(runs=read_runs(folder))
    try:
        record = read_run_record(folder)
    except InputError:
        record = None
    if record is None:
        return progress
    progress.epochs_done = record.epochs_done
    progress.validation_dice = record.best_val_dice
    predictions = ws.predictions / name
    progress.finished = record.finished and predictions.is_dir() and any(predictions.glob("*.nii.gz"))
    try:
        rows = read_log(folder)
    except InputError:
        return progress
    if rows:
        progress.val_loss, progress.pseudo_dice = rows[-1].val_loss, rows[-1].val_dice
    progress.epoch_seconds = _baseline_epoch_seconds(rows, progress.runs)
    return progress


def _baseline_epoch_seconds(rows: tuple[EpochRow, ...], runs: list[Run]) -> list[float]:
    """Durations of the latest epochs on the current device, from log.csv's `seconds` (training time summed
    across runs, at each epoch's end). A run's first epoch is left out: its difference spans the restart."""
    elapsed = {row.epoch: row.seconds for row in rows}
    device = current_device(runs)
    first_of_run = {run.epoch_start + 1 for run in runs if run.epoch_start is not None}
    own = set()
    for i, run in enumerate(runs):
        if run.start.get("device_name") != device or run.epoch_start is None:
            continue
        last = run.epoch_end
        if last is None:  # running, or killed: until the next run's start, else the log's end
            later = [r.epoch_start for r in runs[i + 1:] if r.epoch_start is not None]
            last = later[0] if later else max(elapsed, default=0)
        own.update(range(run.epoch_start + 1, last + 1))
    if not runs:  # trained before runs were recorded: every epoch
        own = set(elapsed)
    return [elapsed[e] - elapsed[e - 1] for e in sorted(own)
            if e in elapsed and e - 1 in elapsed and e not in first_of_run][-RECENT_EPOCHS:]
