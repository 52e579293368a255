"""Tissue volumes of a label map: mL per tissue from voxel counts or from the model's probabilities, and BPF."""

from __future__ import annotations

import math

import numpy as np

from ..core.vocabulary import TISSUES


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


def soft_volumes(sums: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """mL per tissue from the model's probabilities: each class's summed probability × the voxel volume."""
    voxel_ml = float(np.prod(spacing[:3])) / 1000.0
    return {f"{name}_ml_soft": float(sums[label]) * voxel_ml for label, name in TISSUES.items()}
