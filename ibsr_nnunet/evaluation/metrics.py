"""Segmentation metrics per case and tissue class: Dice, Hausdorff distance, HD95, AVD and NSD, in mm (numpy/scipy).

Conventions (all distances in mm, from voxel centres scaled by the per-axis spacing, so anisotropy counts):

* dice = 2|R∩P| / (|R| + |P|).
* hd is the symmetric Hausdorff distance between the two voxel sets, max(max_{p∈P} d(p, R), max_{r∈R} d(r, P)),
  the quantity SimpleITK's HausdorffDistanceImageFilter reports (equal to it within float rounding).
* hd95 is MedPy's: the 95th percentile (numpy's linear interpolation) of the union of both directed surface-distance
  sets, from each surface voxel of one mask to the nearest surface voxel of the other. A surface voxel is a mask
  voxel with a face neighbour outside the mask (mask minus its face-connected erosion); voxels on the array edge
  count as surface. This is not MONAI's "max of the two directed 95th percentiles", which is never smaller.
* The largest surface distance equals hd except when one mask has a cavity or hole the other lacks: the cavity's
  wall is surface, yet lies inside the other mask. So hd95 can exceed hd when such walls make up over 5% of the
  surface voxels (a ball against the same ball with a small cavity: hd sqrt(5), hd95 3 voxels; see the tests).
* avd = |V_R − V_P| / V_R, a fraction (not a percentage).
* nsd is the normalised surface distance (surface Dice) at tolerance tau (default 1 mm): the fraction of both
  surfaces lying within tau of the other surface, (|{r∈S_R: d(r,S_P) ≤ tau}| + |{p∈S_P: d(p,S_R) ≤ tau}|) /
  (|S_R| + |S_P|). Surfaces and distances are hd95's: surface voxels as defined above, each counting once (no area
  weighting), distances between voxel centres. This is MONAI's compute_surface_dice with its default
  use_subvoxels=False; DeepMind's surface-distance (MONAI's use_subvoxels=True) puts area-weighted surface elements
  on the voxel corners instead, shared by masks that touch face to face, and differs from ours (see the tests).
* Empty masks: both empty -> dice 1, hd 0, hd95 0, nsd 1; exactly one empty -> dice 0, hd inf, hd95 inf, nsd 0
  (no finite distance reaches an empty set, and inf ranks last). An empty reference makes avd NaN (V_R = 0).

Speed: each class works in the bounding box of its two masks, and only voxels whose distance is not 0 are measured:
first against the voxel offsets within about two voxels, shortest first, then the few left by a k-d tree of the
other mask's surface. That is exact, and faster than distance transforms of the whole box (one transform of an
IBSR white-matter box alone takes longer than all three classes here) and than SimpleITK (see bench/metrics.py).
hd, hd95 and nsd share one computation of the surface distances per class; nsd only counts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from ..core.errors import InputError
from ..core.vocabulary import NSD_TOLERANCE, TISSUES

PAD = 2  # background voxels around each cropped mask: room for the face neighbours and the nearby offsets


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], *,
                 nsd_tolerance: float = NSD_TOLERANCE) -> list[dict]:
    """Metrics of one case per tissue class, in TISSUES order; InputError unless the label volumes match in shape."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    _check_shapes(reference, prediction)
    _check_spacing(spacing, reference.ndim)
    check_tolerance(nsd_tolerance)
    # Crop both label volumes once to where any label is, so each class works on a smaller box.
    box = _bounding_box((reference != 0) | (prediction != 0))
    if box is not None:
        reference, prediction = reference[box], prediction[box]
    rows = []
    for label, name in TISSUES.items():
        ref_mask, pred_mask = reference == label, prediction == label
        ref_voxels, pred_voxels = np.count_nonzero(ref_mask), np.count_nonzero(pred_mask)
        distances = _surface_distances(ref_mask, pred_mask, spacing)
        hd, hd95 = _hausdorff(distances)
        rows.append({
            "class": name,
            "label": label,
            "dice": _dice(ref_voxels, pred_voxels, np.count_nonzero(ref_mask & pred_mask)),
            "hd": hd,
            "hd95": hd95,
            "avd": _avd(ref_voxels, pred_voxels),
            "nsd": _nsd(distances, nsd_tolerance),
            "ref_voxels": int(ref_voxels),
            "pred_voxels": int(pred_voxels),
        })
    return rows


def dice(ref_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    ref_mask, pred_mask = _masks(ref_mask, pred_mask)
    return _dice(np.count_nonzero(ref_mask), np.count_nonzero(pred_mask), np.count_nonzero(ref_mask & pred_mask))


def avd(ref_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Absolute volume difference relative to the reference volume, |V_ref - V_pred| / V_ref; NaN if ref is empty."""
    ref_mask, pred_mask = _masks(ref_mask, pred_mask)
    return _avd(np.count_nonzero(ref_mask), np.count_nonzero(pred_mask))


def _dice(ref_voxels: int, pred_voxels: int, common_voxels: int) -> float:
    total = ref_voxels + pred_voxels
    return 1.0 if total == 0 else float(2 * common_voxels / total)


def _avd(ref_voxels: int, pred_voxels: int) -> float:
    return math.nan if ref_voxels == 0 else float(abs(ref_voxels - pred_voxels) / ref_voxels)


def hausdorff(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(hd, hd95) in mm of two boolean masks (see the module docstring): (0, 0) if both empty, (inf, inf) if one is."""
    ref_mask, pred_mask = _masks(ref_mask, pred_mask)
    return _hausdorff(_surface_distances(ref_mask, pred_mask, spacing))


def nsd(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float], *,
        tolerance: float = NSD_TOLERANCE) -> float:
    """Normalised surface distance of two boolean masks at `tolerance` mm (module docstring): 1 if both are empty,
    0 if one is."""
    ref_mask, pred_mask = _masks(ref_mask, pred_mask)
    check_tolerance(tolerance)
    return _nsd(_surface_distances(ref_mask, pred_mask, spacing), tolerance)


def check_tolerance(tolerance: float) -> None:
    """InputError unless tolerance is a usable NSD tau in mm (finite, not negative)."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"NSD tolerance {tolerance!r} must be a finite distance in mm of 0 or more "
                         f"(e.g. --nsd-tolerance {NSD_TOLERANCE:g}).")


Distances = Optional[tuple[np.ndarray, np.ndarray, float]]  # see _surface_distances


def _hausdorff(distances: Distances) -> tuple[float, float]:
    if distances is None:
        return math.inf, math.inf
    ref_to_pred, pred_to_ref, hd = distances
    if ref_to_pred.size == 0:
        return 0.0, 0.0
    return hd, float(np.percentile(np.concatenate([ref_to_pred, pred_to_ref]), 95))


def _nsd(distances: Distances, tolerance: float) -> float:
    if distances is None:
        return 0.0
    ref_to_pred, pred_to_ref, _ = distances
    total = ref_to_pred.size + pred_to_ref.size
    if total == 0:
        return 1.0
    return float((np.count_nonzero(ref_to_pred <= tolerance) + np.count_nonzero(pred_to_ref <= tolerance)) / total)


def _surface_distances(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float]) -> Distances:
    """Distances in mm from each surface voxel of ref to pred's surface and back, and hd; two empty arrays and 0
    when both masks are empty, None when exactly one is."""
    _check_spacing(spacing, ref_mask.ndim)
    box = _bounding_box(ref_mask | pred_mask)
    if box is None:
        return np.zeros(0), np.zeros(0), 0.0
    if not ref_mask[box].any() or not pred_mask[box].any():
        return None
    # From here on both masks are flat views of the same padded box, so a neighbour is a fixed step in the index.
    shape = tuple(side.stop - side.start + 2 * PAD for side in box)
    ref, pred = np.pad(ref_mask[box], PAD).ravel(), np.pad(pred_mask[box], PAD).ravel()
    scale = np.asarray(spacing, dtype=np.float64)
    strides = _strides(shape)
    ref_surface, pred_surface = _surface(ref, strides), _surface(pred, strides)
    ref_to_pred, ref_far = _directed(ref, ref_surface, pred, pred_surface, shape, scale)
    pred_to_ref, pred_far = _directed(pred, pred_surface, ref, ref_surface, shape, scale)
    return ref_to_pred, pred_to_ref, max(ref_far, pred_far)


def _directed(a: np.ndarray, a_surface: np.ndarray, b: np.ndarray, b_surface: np.ndarray, shape: tuple[int, ...],
              scale: np.ndarray) -> tuple[np.ndarray, float]:
    """Distances from each surface voxel of a to b's surface, and the largest distance from a voxel of a to b."""
    # Only a's surface voxels off b's surface and a's voxels outside b have a non-zero answer. Outside b, the
    # nearest voxel of b is always a surface voxel of b, so distances to b's surface answer both questions.
    points = np.flatnonzero((a_surface & ~b_surface) | (a & ~b))
    distances = _nearest(points, b_surface, shape, scale)
    zeros = np.zeros(np.count_nonzero(a_surface & b_surface))
    surface_distances = np.concatenate([zeros, distances[a_surface[points]]])
    return surface_distances, float(distances[~b[points]].max(initial=0.0))


def _nearest(points: np.ndarray, target: np.ndarray, shape: tuple[int, ...], scale: np.ndarray) -> np.ndarray:
    """Distance in mm from each voxel in points (flat indices) to the nearest voxel of target (flat, not empty)."""
    # Most answers are a voxel or two: try the offsets within about two of the finest voxels (at most PAD along any
    # axis), shortest first, and leave only the rest to a k-d tree. An offset outside that box is at least `radius`
    # long, so a hit on an offset shorter than that is exact.
    reach = (2 * scale.min() // scale).astype(int)
    radius = ((reach + 1) * scale).min()
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, scale.size)
    lengths = np.sqrt(((offsets * scale) ** 2).sum(axis=1))
    order = np.argsort(lengths, kind="stable")
    order = order[(lengths[order] > 0) & (lengths[order] < radius)]
    distances = np.full(points.size, np.inf)
    todo = np.arange(points.size)
    for step, length in zip(offsets[order] @ _strides(shape), lengths[order]):
        hit = target[points[todo] + step]
        distances[todo[hit]] = length
        todo = todo[~hit]
    if todo.size:
        targets = np.column_stack(np.unravel_index(np.flatnonzero(target), shape)) * scale
        rest = np.column_stack(np.unravel_index(points[todo], shape)) * scale
        distances[todo] = cKDTree(targets, balanced_tree=False, compact_nodes=False).query(rest)[0]
    return distances


def _surface(mask: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Voxels of a flat padded mask with a face neighbour outside it."""
    interior = mask.copy()
    for stride in strides:
        interior[stride:] &= mask[:-stride]
        interior[:-stride] &= mask[stride:]
    return mask & ~interior


def _strides(shape: tuple[int, ...]) -> np.ndarray:
    """Index steps of one voxel along each axis of a flattened C-order array of this shape."""
    return np.cumprod((1,) + shape[:0:-1])[::-1]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box of slices holding every True voxel of mask, or None if there is none."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(hits[0], hits[-1] + 1))
    return tuple(box)


def _masks(ref_mask: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref_mask, pred_mask = np.asarray(ref_mask, dtype=bool), np.asarray(pred_mask, dtype=bool)
    _check_shapes(ref_mask, pred_mask)
    return ref_mask, pred_mask


def _check_shapes(reference: np.ndarray, prediction: np.ndarray) -> None:
    if reference.shape != prediction.shape:
        raise InputError(f"Reference and prediction differ in shape ({reference.shape} vs {prediction.shape}): "
                         "compare volumes on the same voxel grid.")


def _check_spacing(spacing: Sequence[float], ndim: int) -> None:
    if len(spacing) != ndim or not all(s > 0 for s in spacing):
        raise InputError(f"Spacing {tuple(spacing)} must give one positive voxel size in mm per axis of the "
                         f"{ndim}-D volumes.")
