"""Where a fold or a baseline stands, read from the files training writes (no torch, no SLURM)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.workspace import Workspace
from ..evaluation.history import nnunet_fold_curve
from ..nnunet.paths import fold_finished


@dataclass
class Progress:
    epochs_done: int = 0
    pseudo_dice: Optional[float] = None
    val_loss: Optional[float] = None
    validation_dice: Optional[float] = None  # mean foreground Dice of nnU-Net's final validation
    finished: bool = False


def fold_progress(folder: Path, epochs: int) -> Progress:
    """Read progress from nnU-Net's own files (training logs, validation summary): no torch needed."""
    progress = Progress(finished=fold_finished(folder))
    curve = nnunet_fold_curve(folder)
    completed = curve.dropna(subset=["train_loss"])  # an epoch's losses are logged when it ends
    progress.epochs_done = epochs if progress.finished else (int(completed["epoch"].max()) + 1 if len(completed) else 0)
    for column, attribute in (("pseudo_dice", "pseudo_dice"), ("val_loss", "val_loss")):
        values = curve[column].dropna()
        if len(values):
            setattr(progress, attribute, float(values.iloc[-1]))
    summary = folder / "validation" / "summary.json"
    if summary.is_file():
        try:
            progress.validation_dice = float(json.loads(summary.read_text())["foreground_mean"]["Dice"])
        except (ValueError, KeyError, TypeError):
            pass
    return progress


def baseline_progress(ws: Workspace, name: str) -> Progress:
    """From the baseline's own run.json and log.csv (baselines/train.py writes them at every save)."""
    progress = Progress()
    folder = ws.baselines / name
    try:
        run = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return progress
    progress.epochs_done = int(run.get("epochs_done") or 0)
    progress.validation_dice = run.get("best_val_dice")
    predictions = ws.predictions / name
    progress.finished = bool(run.get("finished")) and predictions.is_dir() and any(predictions.glob("*.nii.gz"))
    try:
        with open(folder / "log.csv", newline="") as handle:
            last = list(csv.DictReader(handle))[-1:]
        if last:
            progress.val_loss = float(last[0]["val_loss"]) if last[0].get("val_loss") else None
            progress.pseudo_dice = float(last[0]["val_dice"]) if last[0].get("val_dice") else None
    except (OSError, ValueError, KeyError):
        pass
    return progress
