"""Synthetic IBSR-like subjects (brain with WM core, folded GM ribbon, ventricles, sulcal CSF) in any source layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.vocabulary import PHANTOM_SIZES as SIZES
from .layouts import LAYOUTS

FULL_SHAPE = (256, 128, 256)  # the 1.5 mm axis second, as in IBSR18
SMALL_SHAPE = (64, 32, 64)
DEMO_SHAPE = (64, 32, 64)
# IBSR18's three in-plane resolutions; the slice axis is always 1.5 mm.
FULL_SPACINGS = ((0.9375, 1.5, 0.9375), (1.0, 1.5, 1.0), (0.8370536, 1.5, 0.8370536))
# T1 contrast: CSF dark, GM mid, WM bright (before the subject's intensity scale).
TISSUE_INTENSITY = {1: 30.0, 2: 72.0, 3: 105.0}
LAYOUT_CODES = {"misa": (0, 1, 2, 3), "nitrc": (0, 128, 192, 254), "analyze": (0, 128, 192, 254)}


@dataclass(frozen=True)
class Anatomy:
    """What a size changes: the grid, and how wide the CSF is (grooves, outer layer, ventricles).

    small and full draw IBSR's thin CSF: about 6 % of the brain, in sulci and a layer thinner than one 3.75 mm voxel
    of the small grid, blurred into the grey matter. At the demo's budgets (60 nnU-Net iterations, 8 short baseline
    epochs) most models then predict no CSF at all. The demo size keeps the small grid and the same random draws but
    widens the sulci (0.06 instead of 0.03), thickens the outer CSF layer (from 0.96 of the radius, not 0.992),
    scales the ventricles by 1.5 and blurs less (0.5 voxel), so that CSF is about 19 % of the brain, in sheets (97 %
    of its voxels touch another CSF voxel; 63 % in small), with sharper CSF/GM contrast. It stays IBSR-like in its
    order: CSF is the smallest class (GM ≈ 48 %, WM ≈ 32 %). IBSR18's own CSF is about 1 % of the brain at 1 mm; at
    4 mm it would be sub-voxel.
    """

    shape: tuple[int, int, int]
    groove: float = 0.03  # sulci where |sin·sin| of the groove pattern is below this
    outer: float = 0.992  # outer CSF layer where the normalised radius q exceeds this
    ventricles: float = 1.0  # scale of the lateral ventricles' radii
    blur: float = 0.6  # partial volume at tissue borders, in voxels


ANATOMY = {"small": Anatomy(SMALL_SHAPE), "full": Anatomy(FULL_SHAPE),
           "demo": Anatomy(DEMO_SHAPE, groove=0.06, outer=0.96, ventricles=1.5, blur=0.5)}


@dataclass(frozen=True)
class PhantomSubject:
    subject_id: str
    image: np.ndarray  # int16, (X, Y, Z)
    labels: np.ndarray  # uint8 in 0..3 (background, CSF, GM, WM)
    labels_fill: np.ndarray  # the NITRC "fill" variant: sulcal CSF marked GM
    affine: np.ndarray


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _folding(theta: np.ndarray, phi: np.ndarray, rng: np.random.Generator, terms: int = 4) -> np.ndarray:
    """A smooth pattern in [-1, 1] over the brain surface: the gyri."""
    pattern = np.zeros(np.broadcast_shapes(theta.shape, phi.shape), dtype=np.float32)
    for _ in range(terms):
        k1, k2 = rng.integers(5, 12, size=2)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        pattern += np.sin(k1 * theta + p1) * np.sin(k2 * phi + p2)
    return pattern / terms * 2


def make_subject(index: int, size: str = "small", seed: int = 0) -> PhantomSubject:
    """Subject `index` (1-based) of a phantom set: deterministic for (index, size, seed)."""
    if size not in SIZES:
        raise InputError(f"--size {size} is unknown; use {', '.join(SIZES)}.")
    rng = np.random.default_rng([seed, index])
    full_spacing = FULL_SPACINGS[(index - 1) % len(FULL_SPACINGS)]
    anatomy = ANATOMY[size]
    shape = anatomy.shape
    factor = FULL_SHAPE[0] / shape[0]
    spacing = tuple(s * factor for s in full_spacing)  # same field of view at either size
    x, y, z = _grid(shape, spacing)

    radii = np.array([68.0, 84.0, 60.0]) * rng.uniform(0.93, 1.05)
    xn, yn, zn = x / radii[0], y / radii[1], z / radii[2]
    q = np.sqrt(xn**2 + yn**2 + zn**2).astype(np.float32)
    theta = np.arctan2(zn, xn).astype(np.float32)
    phi = np.arccos(np.clip(yn / np.maximum(q, 1e-6), -1, 1)).astype(np.float32)

    labels = np.zeros(q.shape, dtype=np.uint8)
    brain = q < 1.0
    wm_surface = 0.70 + 0.08 * _folding(theta, phi, rng, terms=6)
    labels[brain] = 2
    labels[q < wm_surface] = 3
    # deep grey matter (thalami) inside the white matter
    for side in (-1, 1):
        labels[((x - side * 11) / 8) ** 2 + (y / 10) ** 2 + ((z + 4) / 8) ** 2 < 1] = 2
    # sulci: narrow CSF grooves cutting into the ribbon, plus a thin outer CSF layer
    grooves = np.abs(np.sin(rng.integers(7, 11) * theta + rng.uniform(0, 6.3)) * np.sin(rng.integers(5, 9) * phi))
    sulcal = brain & (q > wm_surface + 0.04) & ((grooves < anatomy.groove) | (q > anatomy.outer))
    labels[sulcal] = 1
    # lateral ventricles
    v = anatomy.ventricles
    for side in (-1, 1):
        labels[((x - side * 8 * v) / (5 * v)) ** 2 + ((y + 4) / (24 * v)) ** 2 + ((z - 8) / (9 * v)) ** 2 < 1] = 1
    labels_fill = labels.copy()
    labels_fill[sulcal] = 2

    scale = rng.uniform(0.7, 2.4)  # IBSR maxima range from ~80 to ~300
    intensity = np.zeros(q.shape, dtype=np.float32)
    for tissue, value in TISSUE_INTENSITY.items():
        intensity[labels == tissue] = value * scale
    intensity = ndimage.gaussian_filter(intensity, anatomy.blur)  # partial volume at tissue borders
    c = rng.uniform(-1, 1, size=5)
    xr, yr, zr = x / x.max(), y / y.max(), z / z.max()
    bias = np.exp(0.12 * (c[0] * xr + c[1] * yr + c[2] * zr + c[3] * xr * yr + c[4] * zr**2))
    intensity = intensity * bias + rng.normal(0, 3.0 * scale, size=q.shape).astype(np.float32)
    image = np.where(brain, np.clip(np.rint(intensity), 1, 32767), 0).astype(np.int16)

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return PhantomSubject(f"IBSR_{index:02d}", image, labels, labels_fill, affine)


def _coded(labels: np.ndarray, layout: str) -> np.ndarray:
    codes = np.array(LAYOUT_CODES[layout], dtype=np.int16)
    return codes[labels]


def _save(array3d: np.ndarray, affine: np.ndarray, path: Path, analyze: bool) -> None:
    """4-D (X,Y,Z,1) int16, as IBSR18 is distributed: sform only for NIfTI, plain Analyze 7.5 otherwise."""
    data = array3d.astype(np.int16)[..., np.newaxis]
    path.parent.mkdir(parents=True, exist_ok=True)
    if analyze:
        nib.save(nib.AnalyzeImage(data, affine), str(path))
        return
    image = nib.Nifti1Image(data, affine)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=0)
    nib.save(image, str(path))


def misa_split(count: int, *, validation: int | None = None) -> list[str]:
    """MISA's proportions (10 train / 5 validation / 3 test of 18) for `count` subjects, in subject order;
    `validation` sets the Validation_Set's size instead (the held-out cases)."""
    n_test = round(count * 3 / 18) if count >= 4 else 0
    n_val = round(count * 5 / 18) if count >= 4 else 0
    if validation is not None:
        n_val = validation
        if count - n_test - n_val < 2:
            raise InputError(f"--subjects {count} is too few to hold {validation} out, test {n_test} and train at "
                             f"least 2; add subjects.")
    n_train = count - n_test - n_val
    return ["Training_Set"] * n_train + ["Validation_Set"] * n_val + ["Test_Set"] * n_test


def write_phantoms(out: str | Path, subjects: int = 6, *, layout: str = "misa", size: str = "small", seed: int = 0,
                   validation: int | None = None, on_subject_done=lambda subject_id: None) -> list[Path]:
    """Write `subjects` phantom subjects under `out` in `layout` (MISA: `validation` held out, see misa_split);
    returns the image paths."""
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout} is unknown; use {', '.join(LAYOUTS)}.")
    if subjects < 1:
        raise InputError(f"--subjects {subjects} must be at least 1.")
    out = Path(out)
    splits = misa_split(subjects, validation=validation)
    images = []
    for index in range(1, subjects + 1):
        subject = make_subject(index, size, seed)
        sid = subject.subject_id
        if layout == "misa":
            folder = out / splits[index - 1] / sid
            image_path = folder / f"{sid}.nii.gz"
            _save(subject.image, subject.affine, image_path, analyze=False)
            if splits[index - 1] != "Test_Set":
                _save(_coded(subject.labels, layout), subject.affine, folder / f"{sid}_seg.nii.gz", analyze=False)
        elif layout == "nitrc":
            folder = out / sid
            image_path = folder / f"{sid}_ana_strip.nii.gz"
            _save(subject.image, subject.affine, image_path, analyze=False)
            _save(_coded(subject.labels, layout), subject.affine, folder / f"{sid}_segTRI_ana.nii.gz", analyze=False)
            _save(_coded(subject.labels_fill, layout), subject.affine, folder / f"{sid}_segTRI_fill_ana.nii.gz",
                  analyze=False)
        else:
            image_path = out / sid / "images" / "analyze" / f"{sid}_ana.img"
            _save(subject.image, subject.affine, image_path, analyze=True)
            seg = out / sid / "segmentation" / "analyze"
            _save(_coded(subject.labels, layout), subject.affine, seg / f"{sid}_segTRI_ana.img", analyze=True)
            _save(_coded(subject.labels_fill, layout), subject.affine, seg / f"{sid}_segTRI_fill_ana.img", analyze=True)
        images.append(image_path)
        on_subject_done(sid)
    return images


# A stand-in for an unstripped head around a skull-stripped scan: shells at fixed distances (mm) outside the brain,
# intensities as fractions of the brain's 90th percentile (T1: CSF and cortical bone dark, marrow mid, scalp fat
# bright), then a slight blur and Rician-like noise everywhere, air included. Its limits: the shells follow the brain's
# own outline (a real skull is smoother and thicker at the base), and there are no eyes, neck, face or neck muscles.
HEAD_SHELLS = ((0.0, 2.0, 0.25), (2.0, 4.0, 0.05), (4.0, 7.0, 0.45), (7.0, 9.0, 0.08), (9.0, 14.0, 1.1))


def with_head(array: np.ndarray, spacing: tuple[float, float, float], seed: int = 0) -> np.ndarray:
    """A skull-stripped T1 `array` (zeros outside the brain) inside a synthetic CSF gap, skull and scalp (float32)."""
    brain = ndimage.binary_fill_holes(array != 0)
    outside = ndimage.distance_transform_edt(~brain, sampling=spacing)
    bright = float(np.percentile(array[brain], 90))
    head = np.asarray(array, dtype=np.float32).copy()
    for inner, outer, level in HEAD_SHELLS:
        head[(outside > inner) & (outside <= outer)] = level * bright
    head = ndimage.gaussian_filter(head, 0.7)
    noise = np.random.default_rng(seed).normal(0.0, 0.02 * bright, (2, *head.shape))
    return np.hypot(head + noise[0], noise[1]).astype(np.float32)  # magnitude of complex noise: positive, Rician
