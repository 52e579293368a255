"""Cases, z-score normalisation, CSF-weighted 2D/3D patch sampling and seeded augmentation for the baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.orientation import axcodes
from ibsr_nnunet.data.volumes import Volume, read_volume, require_same_grid

from .registry import THICKEST

CSF = 1
VIEW_CODES = {"coronal": "AP", "axial": "SI", "sagittal": "LR"}  # a view slices across the axis of these codes


def zscore(image: np.ndarray) -> np.ndarray:
    """float32 image z-scored over its brain (nonzero) voxels; voxels outside the brain stay 0."""
    image = image.astype(np.float32)
    brain = image != 0
    if not brain.any():  # an empty image has nothing to scale
        return image
    values = image[brain].astype(np.float64)
    out = np.zeros_like(image)
    out[brain] = (values - values.mean()) / max(values.std(), 1e-8)
    return out


def slicing_axis(spacing) -> int:
    """The axis 2D models slice across: the one with the largest spacing (IBSR: axis 1, 1.5 mm), so every slice
    lies in the finest, most isotropic plane; the first such axis on ties."""
    return int(np.argmax(np.asarray(spacing, dtype=float)))


def view_axis(view: str, codes: tuple[str, ...], spacing) -> int:
    """The axis a 2D model trained on `view` slices across, in an image with axis codes `codes`: the thickest axis
    (slicing_axis) for the default view, else the one running A-P (coronal), S-I (axial) or L-R (sagittal)."""
    if view == THICKEST:
        return slicing_axis(spacing)
    found = axis_along(codes, VIEW_CODES[view])
    if found is None:
        raise InputError(f"an image with axis codes {codes} has no axis running {'-'.join(VIEW_CODES[view])}, so it "
                         f"has no {view} slices; fix its affine, or train with --view thickest.")
    return found


def axis_along(codes: tuple[str, ...], letters: str) -> int | None:
    """The axis whose code is one of `letters` (e.g. "LR"), None when no axis has one."""
    return next((i for i, code in enumerate(codes) if code is not None and code in letters), None)


def sliced_position(axis: int, first: int) -> int:
    """Where `axis` of an image lies once axis `first` is moved in front (np.moveaxis(image, first, 0))."""
    return 0 if axis == first else axis + 1 if axis < first else axis


@dataclass
class Case:
    """One subject: z-scored image and labels with the slicing axis moved first, and the file's geometry."""

    id: str
    image: np.ndarray  # float32 (S, H, W): S runs along `axis` of the file
    label: np.ndarray | None  # uint8, same shape, None for unlabelled cases
    axis: int
    volume: Volume  # the image as read, for writing predictions on its exact grid
    left_right: int | None = None  # the left-right axis of `image` (after the slicing axis was moved first)


def load_case(case_id: str, image_path: Path, label_path: Path | None = None, view: str = THICKEST) -> Case:
    """Read, check and normalise one case; 2D models slice it across the axis of `view` (view_axis)."""
    volume = read_volume(image_path)
    label = None
    if label_path is not None:
        label_volume = read_volume(label_path)
        require_same_grid(volume, label_volume, Path(image_path), label_path=Path(label_path))
        label = np.asarray(label_volume.array)
        if label.min() < 0 or label.max() > 3:
            raise InputError(f"{label_path}: labels span {int(label.min())}..{int(label.max())} but must lie in 0..3 "
                             f"(background, CSF, GM, WM); convert the dataset with `ibsr-nnunet convert`.")
    codes = axcodes(volume.affine)
    axis = view_axis(view, codes, volume.spacing)
    if label is not None:
        label = np.ascontiguousarray(np.moveaxis(label.astype(np.uint8), axis, 0))
    image = np.ascontiguousarray(np.moveaxis(zscore(np.asarray(volume.array)), axis, 0))
    left_right = axis_along(codes, "LR")
    return Case(case_id, image, label, axis, volume, None if left_right is None else sliced_position(left_right, axis))


def crop(array: np.ndarray, start, size) -> np.ndarray:
    """array[start:start+size] on every axis, zero where the window leaves the array."""
    out = np.zeros(tuple(size), dtype=array.dtype)
    source, target = [], []
    for begin, length, extent in zip(start, size, array.shape):
        lo, hi = max(begin, 0), min(begin + length, extent)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - begin, hi - begin))
    out[tuple(target)] = array[tuple(source)]
    return out


@dataclass(frozen=True)
class Augment:
    """Random flips, rotation, scale, shear and intensity jitter applied to whole batches.

    flip: probability of mirroring each spatial axis. rotate: largest rotation in degrees (2D: in-plane; 3D: about
    each axis). scale: largest relative zoom (0.1 = 0.9..1.1). shear: largest shear factor. intensity: largest
    relative multiplicative change and additive shift of the (z-scored) intensities. p_spatial: probability that a
    sample gets the rotation/scale/shear transform at all.
    """

    flip: float = 0.5
    rotate: float = 15.0
    scale: float = 0.1
    shear: float = 0.05
    intensity: float = 0.1
    p_spatial: float = 0.5

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
        """(image (N,1,*S) float, label (N,*S) long) transformed; every random draw comes from `rng`."""
        n, dims = image.shape[0], image.ndim - 2
        thetas = np.stack([self._matrix(dims, rng) for _ in range(n)]).astype(np.float32)
        moved = np.abs(thetas[:, :, :dims] - np.eye(dims)).max(axis=(1, 2)) > 0
        if moved.any():
            theta = torch.from_numpy(thetas[moved])
            grid = F.affine_grid(theta, [int(moved.sum()), 1, *image.shape[2:]], align_corners=False)
            idx = torch.from_numpy(np.flatnonzero(moved))
            image[idx] = F.grid_sample(image[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            label[idx] = F.grid_sample(label[idx].unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                                       align_corners=False).squeeze(1).long()
        for axis in range(dims):
            flip = torch.from_numpy(np.flatnonzero(rng.random(n) < self.flip))
            if len(flip):
                image[flip] = image[flip].flip(axis + 2)
                label[flip] = label[flip].flip(axis + 1)
        gain = torch.from_numpy(rng.uniform(1 - self.intensity, 1 + self.intensity, n).astype(np.float32))
        shift = torch.from_numpy(rng.uniform(-self.intensity, self.intensity, n).astype(np.float32))
        view = (n,) + (1,) * (image.ndim - 1)
        return image * gain.view(view) + shift.view(view), label

    def _matrix(self, dims: int, rng: np.random.Generator) -> np.ndarray:
        """One (dims, dims+1) affine in grid_sample's normalised coordinates; identity when not drawn."""
        # draw every number whether or not it is used, so one sample's choice never shifts the next one's draws
        angles = np.deg2rad(rng.uniform(-self.rotate, self.rotate, 1 if dims == 2 else 3))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale)
        shears = rng.uniform(-self.shear, self.shear, dims * (dims - 1))
        if rng.random() >= self.p_spatial:
            return np.eye(dims, dims + 1)
        rotation = np.eye(dims)
        planes = [(0, 1)] if dims == 2 else [(0, 1), (0, 2), (1, 2)]
        for angle, (a, b) in zip(angles, planes):
            r = np.eye(dims)
            r[a, a] = r[b, b] = math.cos(angle)
            r[a, b], r[b, a] = -math.sin(angle), math.sin(angle)
            rotation = rotation @ r
        shear = np.eye(dims)
        shear[~np.eye(dims, dtype=bool)] = shears
        matrix = rotation @ shear / zoom
        return np.concatenate([matrix, np.zeros((dims, 1))], axis=1)


@dataclass(frozen=True)
class Appearance:
    """How scans from elsewhere differ, drawn on z-scored batches (inside the brain only: outside stays 0).

    Each sample gets, each with probability `p`: gamma (exponent log-uniform in 1/gamma..gamma, on the brain's
    range), a smooth multiplicative bias field (up to ±bias, on the intensities before z-scoring, whose mean is
    taken as `offset` standard deviations above 0), Gaussian noise (σ uniform up to `noise`, in z-score units), and a
    lower resolution (down-sampled by a factor up to `resolution`, then back, linearly). Labels are unchanged.
    """

    p: float = 0.3
    gamma: float = 1.5
    bias: float = 0.3
    offset: float = 3.0
    noise: float = 0.4
    resolution: float = 2.0

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
        n, dims = image.shape[0], image.ndim - 2
        # every number is drawn whether or not it is used, so one sample's choice never shifts the next one's draws
        use = rng.random((n, 4)) < self.p
        gammas = np.exp(rng.uniform(-math.log(self.gamma), math.log(self.gamma), n))
        fields = rng.uniform(1 - self.bias, 1 + self.bias, (n, 1) + (3,) * dims).astype(np.float32)
        sigmas = rng.uniform(0, self.noise, n)
        factors = rng.uniform(1, self.resolution, n)
        noise = torch.from_numpy(rng.standard_normal(tuple(image.shape)).astype(np.float32))
        mode = "bilinear" if dims == 2 else "trilinear"
        out = image.clone()
        for i in range(n):
            brain = image[i] != 0
            if not brain.any():
                continue
            x = out[i:i + 1]
            if use[i, 0]:
                low, high = x[0][brain].min(), x[0][brain].max()
                x = low + (high - low) * ((x - low) / (high - low + 1e-8)).clamp(0, 1) ** float(gammas[i])
            if use[i, 1]:
                field = F.interpolate(torch.from_numpy(fields[i:i + 1]), size=tuple(image.shape[2:]), mode=mode,
                                      align_corners=True)
                x = field * (x + self.offset) - self.offset
            if use[i, 2]:
                x = x + float(sigmas[i]) * noise[i:i + 1]
            if use[i, 3]:
                size = tuple(max(1, int(round(s / factors[i]))) for s in image.shape[2:])
                x = F.interpolate(F.interpolate(x, size=size, mode=mode, align_corners=False),
                                  size=tuple(image.shape[2:]), mode=mode, align_corners=False)
            out[i] = torch.where(brain, x[0], torch.zeros(()))
        return out, label


BatchTransform = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


def chained(*steps: Optional[BatchTransform]) -> Optional[BatchTransform]:
    """One batch transform applying `steps` in order (each (image, label, rng) -> (image, label)); None for none."""
    steps = [step for step in steps if step is not None]
    if not steps:
        return None

    def apply(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
        for step in steps:
            image, label = step(image, label, rng)
        return image, label
    return apply


class PatchSampler:
    """Random training patches from labelled cases, over-representing CSF.

    patch: patch size, 2 numbers (2D: one slice across the slicing axis) or 3 (3D). csf_fraction: share of patches
    centred on a CSF voxel, the weak class. uniform_fraction: share centred anywhere in the volume (so empty borders
    are seen too); the rest are centred on a random labelled (brain) voxel. flip: mirror each patch left-right with
    probability one half (2D patches of slices across the left-right axis have no such axis: left as they are).
    augment: applied to every batch, or None. seed: the sampler's own generator; its state is part of a training
    checkpoint.
    """

    def __init__(self, cases: list[Case], patch: tuple[int, ...], csf_fraction: float = 0.33,
                 uniform_fraction: float = 0.1, augment: Optional[BatchTransform] = None, seed: int = 0,
                 flip: bool = False):
        if not cases or any(c.label is None for c in cases):
            raise ValueError("PatchSampler needs at least one case, all of them labelled")
        if len(patch) not in (2, 3) or min(patch) < 1:
            raise ValueError(f"patch must be 2 or 3 positive sizes, got {patch}")
        if not (0 <= csf_fraction and 0 <= uniform_fraction and csf_fraction + uniform_fraction <= 1):
            raise ValueError(f"csf_fraction and uniform_fraction must be >= 0 with a sum <= 1, "
                             f"got {csf_fraction} and {uniform_fraction}")
        self.cases, self.patch, self.augment, self.flip = cases, tuple(patch), augment, flip
        self.csf_fraction, self.uniform_fraction = csf_fraction, uniform_fraction
        self.rng = np.random.default_rng(seed)
        self._csf = [np.flatnonzero(c.label == CSF) for c in cases]
        self._brain = [np.flatnonzero(c.label) for c in cases]

    def _centre(self, index: int) -> tuple[int, ...]:
        case, draw = self.cases[index], self.rng.random()
        if draw < self.csf_fraction and len(self._csf[index]):
            pool = self._csf[index]
        elif draw < self.csf_fraction + self.uniform_fraction or not len(self._brain[index]):
            return tuple(int(self.rng.integers(n)) for n in case.label.shape)
        else:
            pool = self._brain[index]
        return tuple(int(i) for i in np.unravel_index(pool[self.rng.integers(len(pool))], case.label.shape))

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One (image, label) patch of shape `patch`."""
        index = int(self.rng.integers(len(self.cases)))
        case, centre = self.cases[index], self._centre(index)
        if len(self.patch) == 2:  # one slice: the centre's slice index, then a window inside it
            image, label, centre = case.image[centre[0]], case.label[centre[0]], centre[1:]
        else:
            image, label = case.image, case.label
        # jitter the window so the chosen voxel is not always in the middle
        start = [c - p // 2 + int(self.rng.integers(-(p // 4), p // 4 + 1)) for c, p in zip(centre, self.patch)]
        image, label = crop(image, start, self.patch), crop(label, start, self.patch)
        # drawn for every patch, so whether one is mirrored never shifts the next one's draws
        if self.flip and self.rng.random() < 0.5 and case.left_right is not None:
            axis = case.left_right - (len(self.patch) == 2)  # a 2D patch is one slice: the slicing axis is gone
            if axis >= 0:
                image, label = np.flip(image, axis).copy(), np.flip(label, axis).copy()
        return image, label

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (size, 1, *patch) float32, labels (size, *patch) int64), augmented when an Augment is set."""
        pairs = [self.sample() for _ in range(size)]
        image = torch.from_numpy(np.stack([p[0] for p in pairs])).unsqueeze(1)
        label = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        if self.augment is not None:
            image, label = self.augment(image, label, self.rng)
        return image, label
