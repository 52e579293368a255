"""Training time and loss curves of every model, as each model kind reads them from its own logs."""

from __future__ import annotations

import math

import pandas as pd

from ..core.workspace import Workspace
from ..models import load_model


def training_seconds(ws: Workspace, model: str) -> float:
    """Seconds spent training `model` (all its folds for nnU-Net; the recorded budget used for a baseline); NaN if
    unknown (or not a model of any kind)."""
    found = load_model(ws, model)
    return found.training_seconds() if found is not None else math.nan


def training_curves(ws: Workspace, model: str) -> dict[str, pd.DataFrame]:
    """label -> epoch, train_loss, val_loss (one curve per nnU-Net fold, one per baseline run); empty if no logs."""
    found = load_model(ws, model)
    return found.training_curves() if found is not None else {}
