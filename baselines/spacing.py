"""Scans far from the training spacing, for the baselines: resampled to it (linear) before the network sees them, and
their class probabilities carried back onto the scan's grid before the argmax. nnU-Net resamples by itself."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ibsr_nnunet.core.oriented import confidence

# per axis, either way; IBSR18's own spacings lie within 0.89-1.07 of their median, so none of them is resampled
RESAMPLE_RATIO = 1.2


def far_from(spacing: Sequence[float], target: Sequence[float], ratio: float = RESAMPLE_RATIO) -> bool:
    """Whether some axis's spacing is more than `ratio` times finer or coarser than the target's."""
    return any(not 1 / ratio <= s / t <= ratio for s, t in zip(spacing, target))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The grid of `target` spacing over the same field of view."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def onto_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """`array` resampled to `shape`, the two grids covering the same field of view (outer voxel edges aligned)."""
    zooms = [n / m for n, m in zip(shape, array.shape)]
    return ndimage.zoom(array, zooms, order=order, grid_mode=True, mode="nearest")


def to_spacing(image: np.ndarray, spacing: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """A skull-stripped image (0 outside the brain) on the grid of `target` spacing: the brain mask resampled
    linearly and cut at one half, and inside it the mean of the brain voxels nearby (linear weights), so the
    outside's zeros never darken the brain's edge."""
    shape = resampled_shape(image.shape, spacing, target)
    brain = image != 0
    weight = onto_shape(brain.astype(np.float32), shape)
    total = onto_shape(np.where(brain, image, 0).astype(np.float32), shape)
    inside = weight >= 0.5
    out = np.zeros(shape, np.float32)
    out[inside] = total[inside] / weight[inside]
    return out


def argmax_on(probabilities: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities (C, *grid) carried onto `shape` (linear, class by class), then the argmax there:
    (uint8 labels, each class's summed probability, the confidence over the tissue voxels)."""
    shape = tuple(shape)
    labels = np.zeros(shape, np.uint8)
    best = np.full(shape, -1.0, np.float32)
    sums = np.zeros(len(probabilities))
    for code, channel in enumerate(probabilities):
        carried = onto_shape(np.asarray(channel, np.float32), shape)
        sums[code] = float(carried.sum(dtype=np.float64))
        higher = carried > best
        labels[higher] = code
        best[higher] = carried[higher]
    return labels, sums, confidence(best[np.newaxis], labels)
