"""Training time and loss curves of every model, read from the logs that nnU-Net and the baselines write."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import pandas as pd

from baselines.run_folder import read_log, read_run_record

from ..core.vocabulary import NNUNET_PREFIX
from ..core.workspace import Workspace
from ..nnunet.paths import fold_folder

STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): (.*?)\s*$")


def stamped_lines(log: Path) -> list[tuple[datetime, str]]:
    """(time, text) of each line nnU-Net stamped in one training log."""
    return [(datetime.fromisoformat(m[1]), m[2]) for line in log.read_text(errors="replace").splitlines()
            if (m := STAMPED.match(line))]


def nnunet_folds(ws: Workspace, model: str) -> list[Path]:
    """The fold folders behind an nnU-Net prediction set, as its model.json records them."""
    info_file = ws.predictions / model / "model.json"
    if not info_file.is_file():
        return []
    info = json.loads(info_file.read_text())
    return [fold_folder(ws, config, fold, trainer=info["trainer"])
            for config in info["configurations"] for fold in info["folds"]]


def nnunet_fold_seconds(fold: Path) -> float:
    """Wall time of one fold's training: each run's first to last log line, summed over resumed runs."""
    total = 0.0
    for log in fold.glob("training_log_*.txt"):
        lines = stamped_lines(log)
        if lines:
            total += (lines[-1][0] - lines[0][0]).total_seconds()
    return total


def nnunet_fold_curve(fold: Path) -> pd.DataFrame:
    """epoch, train_loss, val_loss, pseudo_dice per epoch; a resumed epoch keeps its last complete run."""
    epochs: dict[int, dict] = {}
    for log in sorted(fold.glob("training_log_*.txt")):  # names carry the start time: oldest run first
        epoch = None
        for _, text in stamped_lines(log):
            if m := re.fullmatch(r"Epoch (\d+)", text):
                epoch = int(m[1])
            elif epoch is not None and (m := re.fullmatch(r"(train_loss|val_loss) (-?[\d.]+(?:e-?\d+)?)", text)):
                epochs.setdefault(epoch, {"epoch": epoch})[m[1]] = float(m[2])
            elif epoch is not None and text.startswith("Pseudo dice"):
                values = [float(v) for v in re.findall(r"\d+\.\d+(?:e-?\d+)?", text)]  # "np.float32(0.45)" or "0.45"
                if values:
                    epochs.setdefault(epoch, {"epoch": epoch})["pseudo_dice"] = sum(values) / len(values)
    return pd.DataFrame(sorted(epochs.values(), key=lambda row: row["epoch"]),
                        columns=["epoch", "train_loss", "val_loss", "pseudo_dice"])


def training_seconds(ws: Workspace, model: str) -> float:
    """Seconds spent training `model` (all its folds for nnU-Net; the recorded budget used for a baseline); NaN if
    unknown."""
    if model.startswith(NNUNET_PREFIX):
        folds = nnunet_folds(ws, model)
        return sum(map(nnunet_fold_seconds, folds)) if folds else float("nan")
    run = read_run_record(ws.baselines / model)
    return run.train_seconds if run is not None else float("nan")


def training_curves(ws: Workspace, model: str) -> dict[str, pd.DataFrame]:
    """label -> epoch, train_loss, val_loss (one curve per nnU-Net fold, one per baseline run); empty if no logs."""
    if model.startswith(NNUNET_PREFIX):
        curves = {}
        for fold in nnunet_folds(ws, model):
            curve = nnunet_fold_curve(fold)
            if not curve.empty:
                curves[f"{fold.parent.name.rsplit('__', 1)[-1]} {fold.name}"] = curve
        return curves
    rows = read_log(ws.baselines / model)
    return {model: pd.DataFrame([asdict(row) for row in rows])} if rows else {}
