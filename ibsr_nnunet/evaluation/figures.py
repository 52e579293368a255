"""The leaderboard's pictures: Dice boxplots and intervals, significance map, volume agreement, overlays, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..core.atomic import atomic_path
from ..core.vocabulary import NNUNET_MODEL_KEYS, TISSUES
from ..core.workspace import Workspace
from ..data.volumes import read_volume
from . import statistics
from .history import training_curves

TISSUE_COLOURS = {1: "#2f7fd6", 2: "#e8a33d", 3: "#f4f1de"}  # CSF blue, GM orange, WM ivory
TISSUE_COLOURS_DARK = {"CSF": "#1f5fa8", "GM": "#b8741a", "WM": "#6b6b5a"}  # readable on white, unlike WM's ivory
# nnU-Net's ensembles: their curves are their members'
ENSEMBLES = {name for name, (_, key) in NNUNET_MODEL_KEYS.items() if key == "ensemble"}
LABEL_MAP = ListedColormap(["none", *TISSUE_COLOURS.values()])


def save_figure(figure, target: Path, dpi: int = 110) -> Path:
    """The figure as a PNG, written atomically; the figure is closed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(figure)
    return target


def dice_boxplots(per_case: pd.DataFrame, order: list[str], target: Path) -> Path:
    """One panel per tissue: the held-out cases' Dice for each model, best model first."""
    figure, axes = plt.subplots(1, len(TISSUES), figsize=(4.2 * len(TISSUES), 0.5 * len(order) + 2), sharey=True)
    for axis, name in zip(axes, TISSUES.values()):
        data = [per_case[(per_case["model"] == m) & (per_case["class"] == name)]["dice"].to_numpy() for m in order]
        axis.boxplot(data, orientation="horizontal", tick_labels=order, showmeans=True)
        for row, values in enumerate(data, start=1):  # the cases themselves: with few of them, boxes alone mislead
            axis.scatter(values, np.full(len(values), row), s=10, color="black", alpha=0.6, zorder=3)
        axis.set_title(name)
        axis.set_xlabel("Dice")
        axis.set_xlim(max(0.0, min((v.min() for v in data if len(v)), default=0) - 0.05), 1.0)
        axis.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    figure.suptitle("Dice per held-out case")
    return save_figure(figure, target)


def mean_dice_intervals(board: pd.DataFrame, per_case: pd.DataFrame, target: Path) -> Path:
    """The models in rank order: mean Dice over the tissues with its 95 % bootstrap interval, and each held-out
    case's mean Dice; without intervals (too few cases) the caption says why."""
    from .leaderboard import case_scores

    order = board["model"].tolist()
    scores, cases = case_scores(per_case, order)
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(order) + 1.6))
    rows = np.arange(len(order))
    for row, values in zip(rows, scores):
        axis.scatter(values, np.full(len(values), row), s=12, color="grey", alpha=0.6, zorder=2)
    has_ci = board["mean_dice_ci_low"].notna().to_numpy()
    low, high = board["mean_dice_ci_low"].to_numpy(), board["mean_dice_ci_high"].to_numpy()
    mean = board["mean_dice"].to_numpy()
    axis.errorbar(mean[has_ci], rows[has_ci], xerr=[mean[has_ci] - low[has_ci], high[has_ci] - mean[has_ci]],
                  fmt="none", ecolor="black", capsize=4, zorder=3)
    axis.scatter(mean, rows, marker="D", color="#c0392b", zorder=4, label="mean Dice")
    axis.set_yticks(rows, order)
    axis.invert_yaxis()
    axis.set_xlabel("mean Dice over CSF, GM, WM")
    axis.grid(axis="x", alpha=0.3)
    n = len(cases)
    if has_ci.any():
        caption = (f"{n} held-out cases (grey); bars: 95 % paired percentile bootstrap interval "
                   f"({statistics.RESAMPLES} resamples)")
    else:
        caption = f"{n} held-out case(s) (grey): below {statistics.MIN_CASES}, no interval is drawn"
    axis.set_title(f"Mean Dice by model\n{caption}", fontsize=9)
    return save_figure(figure, target)


def significance_map(board: pd.DataFrame, per_case: pd.DataFrame, target: Path) -> Path | None:
    """challengeR's significance map: cell (row, column) holds the p that the row's model beats the column's,
    all ordered pairs one family; None below MIN_CASES cases or with a single model."""
    from .leaderboard import case_scores

    order = board["model"].tolist()
    scores, cases = case_scores(per_case, order)
    m, n = len(order), len(cases)
    if n < statistics.MIN_CASES or m < 2:
        return None
    p = statistics.pairwise(scores)
    figure, axis = plt.subplots(figsize=(0.8 * m + 3, 0.7 * m + 2.2))
    significant = np.where(np.isnan(p), np.nan, (p < statistics.ALPHA).astype(float))
    axis.imshow(significant, cmap=ListedColormap(["#eeeeee", "#2e8b57"]), vmin=0, vmax=1)
    for i in range(m):
        for j in range(m):
            if i != j:
                axis.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if p[i, j] < statistics.ALPHA else "black")
    axis.set_xticks(range(m), order, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(m), order, fontsize=8)
    axis.set_xlabel("... than this model")
    axis.set_ylabel("this model is better ...")
    axis.set_title("Pairwise significance (challengeR style): green where p < 0.05\n"
                   f"exact one-sided paired Wilcoxon on per-case mean Dice, Holm over all {m * (m - 1)} ordered pairs;"
                   f"\na separate family from p_vs_best. {n} cases: smallest attainable p = "
                   f"{statistics.smallest_p_text(m, n, comparisons=m * (m - 1))}", fontsize=8)
    return save_figure(figure, target)


def volume_agreement(board: pd.DataFrame, per_case: pd.DataFrame, target: Path) -> Path:
    """One panel per tissue: each model's volume errors (prediction minus reference, mL) per case, its bias and
    Bland–Altman 95 % limits of agreement."""
    order = board["model"].tolist()
    figure, axes = plt.subplots(1, len(TISSUES), figsize=(4.4 * len(TISSUES), 0.45 * len(order) + 1.8), sharey=True)
    rows = np.arange(len(order))
    for axis, name in zip(axes, TISSUES.values()):
        axis.axvline(0, color="black", linewidth=0.8)
        for row, model in zip(rows, order):
            values = per_case[(per_case["model"] == model) & (per_case["class"] == name)]
            errors = (values["pred_ml"] - values["ref_ml"]).to_numpy()
            axis.scatter(errors, np.full(len(errors), row), s=12, color="grey", alpha=0.6, zorder=2)
            line = board.set_index("model").loc[model]
            low, high = line[f"{name}_vol_loa_low_ml"], line[f"{name}_vol_loa_high_ml"]
            if np.isfinite(low) and np.isfinite(high):
                axis.plot([low, high], [row, row], color=TISSUE_COLOURS_DARK[name], linewidth=2, zorder=3)
            axis.scatter([line[f"{name}_vol_bias_ml"]], [row], marker="D", color="#c0392b", zorder=4)
        axis.set_title(name)
        axis.set_xlabel("prediction − reference (mL)")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, order)
    axes[0].invert_yaxis()
    figure.suptitle("Volume agreement on the held-out cases: cases (grey), bias (diamond), "
                    "Bland–Altman 95 % limits of agreement (bar)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, target)



def representative_slices(labels: np.ndarray, axis: int, count: int = 3) -> list[int]:
    """Slices at 30 %, 50 % and 70 % of the brain's extent along `axis` (where all tissues show)."""
    present = np.flatnonzero(np.any(labels > 0, axis=tuple(a for a in range(labels.ndim) if a != axis)))
    if present.size == 0:
        return [labels.shape[axis] // 2] * count
    return [int(round(present[0] + f * (present[-1] - present[0]))) for f in np.linspace(0.3, 0.7, count)]


def overlays(image: Path, reference: Path, predictions: dict[str, Path], *, target: Path) -> Path:
    """Rows: the reference, then each model; columns: representative slices across the thickest axis."""
    volume = read_volume(image)
    spacing = np.array(volume.spacing)
    axis = int(np.argmax(spacing))  # slices across the thick axis are the in-plane, isotropic ones
    ref = read_volume(reference).array
    rows = {"reference": ref, **{m: read_volume(p).array for m, p in predictions.items()}}
    slices = representative_slices(ref, axis)
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    figure, axes = plt.subplots(len(rows), len(slices), figsize=(3 * len(slices), 3 * len(rows)), squeeze=False)
    for r, (name, labels) in enumerate(rows.items()):
        for c, index in enumerate(slices):
            grey = np.take(volume.array, index, axis=axis).T
            tissue = np.take(labels, index, axis=axis).T.astype(float)
            cell = axes[r][c]
            cell.imshow(grey, cmap="gray", origin="lower", aspect=in_plane[1] / in_plane[0])
            cell.imshow(np.ma.masked_equal(tissue, 0), cmap=LABEL_MAP, vmin=0, vmax=3, alpha=0.55,
                        origin="lower", aspect=in_plane[1] / in_plane[0], interpolation="nearest")
            cell.set_xticks([])
            cell.set_yticks([])
            if c == 0:
                cell.set_ylabel(name, fontsize=9)
            if r == 0:
                cell.set_title(f"slice {index} (axis {axis})", fontsize=9)
    figure.legend(handles=[Patch(color=TISSUE_COLOURS[k], label=v) for k, v in TISSUES.items()],
                  loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(f"{reference.name.removesuffix('.nii.gz')}: reference and predictions")
    figure.tight_layout(rect=(0, 0.03, 1, 0.98))
    return save_figure(figure, target)


def curves(ws: Workspace, models: list[str], target: Path) -> Path | None:
    """Training and validation loss per epoch for every model with logs; None when no model has any."""
    # the ensemble's curves are its members' (already drawn): skip it
    found = {m: c for m in models if m not in ENSEMBLES and (c := training_curves(ws, m))}
    if not found:
        return None
    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for cell, (model, runs) in zip(axes.flat, found.items()):
        for label, curve in runs.items():
            line, = cell.plot(curve["epoch"], curve["train_loss"], label=f"{label} train")
            if "val_loss" in curve and curve["val_loss"].notna().any():
                cell.plot(curve["epoch"], curve["val_loss"], linestyle="--", color=line.get_color(),
                          label=f"{label} val")
        cell.set_title(model, fontsize=10)
        cell.set_xlabel("epoch")
        cell.set_ylabel("loss")
        cell.grid(alpha=0.3)
        cell.legend(fontsize=6)
    for cell in list(axes.flat)[len(found):]:
        cell.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, target)


def leaderboard_figures(ws: Workspace, board: pd.DataFrame, per_case: pd.DataFrame) -> list[Path]:
    """The leaderboard's figures: Dice boxplots, mean Dice intervals, volume agreement, the significance map (from
    MIN_CASES cases on), overlays of the first held-out case, training curves."""
    from .evaluate import references
    from .leaderboard import prediction_sets

    order = board["model"].tolist()
    drawn = [dice_boxplots(per_case, order, ws.figures / "dice_boxplot.png"),
             mean_dice_intervals(board, per_case, ws.figures / "mean_dice_ci.png"),
             volume_agreement(board, per_case, ws.figures / "volume_agreement.png")]
    significance = ws.figures / "significance.png"
    drawn.append(significance_map(board, per_case, significance))
    if drawn[-1] is None and significance.exists():  # an old map must not outlive the cases it was drawn from
        significance.unlink()
    case, reference = next(iter(references(ws).items()))
    sets = prediction_sets(ws)
    drawn.append(overlays(ws.raw_dataset / "imagesTs" / f"{case}_0000.nii.gz", reference,
                          {m: sets[m] / f"{case}.nii.gz" for m in order if m in sets},
                          target=ws.figures / f"overlay_{case}.png"))
    drawn.append(curves(ws, order, ws.figures / "training_curves.png"))
    return [p for p in drawn if p]
