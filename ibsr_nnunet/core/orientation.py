"""Orientation of scans: axis codes, obliquity, and reorientation by permuting and flipping array axes only (no
resampling), so that a map predicted in the training orientation goes back onto the input's grid voxel for voxel.

Pure geometry on (array, affine) pairs; Analyze files carry no orientation, so nibabel's convention for them applies
(their affine is built from the voxel sizes, RAS-like: axis codes L, A, S read from a flipped first axis)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations

OBLIQUE_DEGREES = 10.0  # farther than this from the nearest axis-aligned orientation: warned, not resampled


def axcodes(affine: np.ndarray) -> tuple[str, ...]:
    """Where each array axis points in the world, e.g. ('R', 'A', 'S')."""
    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def obliquity_degrees(affine: np.ndarray) -> float:
    """How far (degrees) the most oblique array axis is from its nearest world axis."""
    return float(np.degrees(np.max(nib.affines.obliquity(np.asarray(affine, dtype=float)))))


def common_axcodes(affines: list) -> tuple[str, ...]:
    """The axis codes most of these images share (IBSR18's training images: all R, A, S)."""
    return Counter(axcodes(a) for a in affines).most_common(1)[0][0]


@dataclass(frozen=True)
class Reorientation:
    """The permutations and flips that take an input's array axes to a target orientation, and back."""

    input_axcodes: tuple[str, ...]
    target_axcodes: tuple[str, ...]

    @property
    def identity(self) -> bool:
        return self.input_axcodes == self.target_axcodes

    def _transform(self, source: tuple[str, ...], target: tuple[str, ...]) -> np.ndarray:
        return orientations.ornt_transform(orientations.axcodes2ornt(source), orientations.axcodes2ornt(target))

    def apply(self, array: np.ndarray) -> np.ndarray:
        if self.identity:
            return array
        return np.ascontiguousarray(orientations.apply_orientation(
            array, self._transform(self.input_axcodes, self.target_axcodes)))

    def undo(self, array: np.ndarray) -> np.ndarray:
        """An array in the target orientation (a label map, a probability map's first 3 axes) back on the input's
        axes, voxel for voxel."""
        if self.identity:
            return array
        return np.ascontiguousarray(orientations.apply_orientation(
            array, self._transform(self.target_axcodes, self.input_axcodes)))

    def sizes(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        """Per-axis voxel sizes of the input (mm) in the target's axis order: permuted as the axes are."""
        if self.identity:
            return tuple(float(s) for s in spacing)
        turned = [0.0] * len(spacing)
        for size, (axis, _) in zip(spacing, self._transform(self.input_axcodes, self.target_axcodes)):
            turned[int(axis)] = float(size)
        return tuple(turned)

    def affine(self, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The affine of the reoriented array: every voxel stays where it was in the world."""
        if self.identity:
            return affine
        transform = self._transform(self.input_axcodes, self.target_axcodes)
        return affine @ orientations.inv_ornt_aff(transform, shape[:3])


def towards(affine: np.ndarray, target: tuple[str, ...]) -> Reorientation:
    """How to bring an image with `affine` to the `target` axis codes; an oblique image goes to the nearest
    axis-aligned orientation."""
    nearest = tuple(orientations.ornt2axcodes(orientations.io_orientation(np.asarray(affine, dtype=float))))
    return Reorientation(nearest, tuple(target))

