"""Training time and loss curves of every model, read from the logs that nnU-Net and the baselines write."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from baselines.run_folder import read_log, read_run_record

from ..core.vocabulary import NNUNET_PREFIX
from ..core.workspace import Workspace
from ..nnunet.fold import fold_epochs, log_seconds, logs
from ..nnunet.paths import fold_folder
from ..nnunet.prediction_record import read_prediction_record

CURVE = ("train_loss", "val_loss", "pseudo_dice")


def nnunet_folds(ws: Workspace, model: str) -> list[Path]:
    """The fold folders behind an nnU-Net prediction set, as its model.json records them."""
    info = read_prediction_record(ws.predictions / model)
    if info is None:
        return []
    return [fold_folder(ws, config, fold, trainer=info.trainer) for config in info.configurations
            for fold in info.folds]


def nnunet_fold_seconds(fold: Path) -> float:
    """Wall time of one fold's training: each run's first to last log line, summed over resumed runs."""
    return sum(map(log_seconds, logs(fold)))


def nnunet_fold_curve(fold: Path) -> pd.DataFrame:
    """epoch, train_loss, val_loss, pseudo_dice per epoch; a resumed epoch keeps its last complete run."""
    rows = [{"epoch": e.epoch, **{k: getattr(e, k) for k in CURVE if getattr(e, k) is not None}}
            for e in fold_epochs(fold) if any(getattr(e, k) is not None for k in CURVE)]
    return pd.DataFrame(rows, columns=["epoch", *CURVE])


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
