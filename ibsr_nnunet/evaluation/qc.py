"""Quality-control pictures of segmented scans: three orthogonal slices through the brain's centre with the tissue
map over them (and the outline of the brain mask a stripped scan was cut with), per scan and as one contact sheet for
a batch (the tissue colours are the leaderboard figures')."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from ..core.vocabulary import TISSUES
from .figures import LABEL_MAP, TISSUE_COLOURS, save_figure

VIEWS = ("sagittal", "coronal", "axial")
BRAIN_OUTLINE = "#ffd700"  # the skull-stripping mask's edge: yellow, unlike every tissue colour


@dataclass
class Snapshot:
    """One scan in a display orientation whose axes point R, A, S (the training orientation of IBSR18)."""

    name: str
    image: np.ndarray  # (R, A, S)
    labels: np.ndarray  # uint8, same shape
    spacing: tuple[float, float, float]
    title: str
    brain: Optional[np.ndarray] = None  # bool, same shape: the mask the scan was skull-stripped with, outlined


def brain_centre(labels: np.ndarray, image: np.ndarray) -> tuple[int, int, int]:
    """The centre of the tissue map (of the nonzero image where the map is empty), in voxels."""
    mask = labels > 0 if labels.any() else image != 0
    if not mask.any():
        return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]
    return tuple(int(round(float(np.mean(np.nonzero(mask)[axis])))) for axis in range(3))  # type: ignore[return-value]


def _crop(image: np.ndarray, labels: np.ndarray, brain: np.ndarray, margin: int = 4) -> tuple[np.ndarray, ...]:
    """The slices cut to the head (nonzero image or map) plus a margin: the brain fills the panel."""
    rows, cols = np.nonzero((image != 0) | (labels != 0))
    if not len(rows):
        return image, labels, brain
    box = np.s_[max(rows.min() - margin, 0):rows.max() + margin + 1,
                max(cols.min() - margin, 0):cols.max() + margin + 1]
    return image[box], labels[box], brain[box]


def _views(snapshot: Snapshot) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """(image, labels, brain mask, aspect) of the sagittal, coronal and axial slices, oriented for display (up = S
    or A); the mask is all False when the scan was not stripped."""
    x, y, z = brain_centre(snapshot.labels, snapshot.image)
    sx, sy, sz = snapshot.spacing
    brain = snapshot.brain if snapshot.brain is not None else np.zeros(snapshot.labels.shape, bool)
    cuts = [(np.s_[x, :, :], sz / sy), (np.s_[:, y, :], sz / sx), (np.s_[:, :, z], sy / sx)]
    return [(*_crop(snapshot.image[cut].T, snapshot.labels[cut].T, brain[cut].T), aspect) for cut, aspect in cuts]


def grey_window(image: np.ndarray) -> tuple[float, float]:
    """(black, white) intensities of the picture: 0 (the background of a skull-stripped scan) or the brain's 0.5th
    percentile when that is lower, up to its 99.5th; any range works, negative or constant included."""
    brain = image[np.isfinite(image) & (image != 0)]
    if not brain.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(brain, (0.5, 99.5)))
    low = min(low, 0.0)
    return low, high if high > low else low + 1.0


def _draw(axes, snapshot: Snapshot) -> None:
    low, high = grey_window(snapshot.image)
    for axis, view, (image, labels, brain, aspect) in zip(axes, VIEWS, _views(snapshot)):
        axis.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="nearest")
        axis.imshow(np.ma.masked_equal(labels, 0), cmap=LABEL_MAP, vmin=0, vmax=3, alpha=0.45, origin="lower",
                    aspect=aspect, interpolation="nearest")
        if brain.any() and not brain.all():
            axis.contour(brain.astype(np.float32), levels=[0.5], colors=[BRAIN_OUTLINE], linewidths=0.9,
                         origin="lower")
        axis.text(0.02, 0.02, view, transform=axis.transAxes, color="white", fontsize=8, va="bottom")
        axis.set_axis_off()


def _legend(figure) -> None:
    figure.legend(handles=[Patch(color=TISSUE_COLOURS[k], label=v) for k, v in TISSUES.items()], loc="lower center",
                  ncol=3, frameon=False, fontsize=9)


def qc_picture(snapshot: Snapshot, target: Path) -> Path:
    """`<name>_qc.png`: the three slices, the tissue map over them, the scan, model and volumes in the title."""
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 4.2))
    _draw(axes, snapshot)
    figure.suptitle(snapshot.title, fontsize=10)
    _legend(figure)
    return save_figure(figure, target, dpi=100)


def qc_sheet(snapshots: list[Snapshot], target: Path) -> Path:
    """One contact sheet for a batch: a row per scan."""
    figure, axes = plt.subplots(len(snapshots), 3, figsize=(10.5, 3.9 * len(snapshots)), squeeze=False)
    for row, snapshot in zip(axes, snapshots):
        _draw(row, snapshot)
        row[1].set_title(snapshot.title, fontsize=9)
    _legend(figure)
    figure.tight_layout(rect=(0, 0.04, 1, 1), h_pad=2.5)
    return save_figure(figure, target, dpi=100)
