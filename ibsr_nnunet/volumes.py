"""Reading and writing volumes: header checks with nibabel, voxels and geometry with SimpleITK (as nnU-Net reads them)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .errors import InputError

AFFINE_TOLERANCE = 1e-4

# ITK warns on every Analyze read that the format is deprecated; the files are still read correctly.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


def header_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The shape the file's header declares (no voxels read)."""
    try:
        return tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception as err:  # nibabel raises many types for broken headers
        raise InputError(f"{path}: cannot read the image header ({err}); the file is corrupt or not NIfTI/Analyze, re-download or re-export it.") from None


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """A 3-D image; a 4-D file with a singleton last axis is squeezed, anything else refused."""
    shape = header_shape(path)
    if len(shape) == 4 and shape[3] != 1 or len(shape) > 4:
        raise InputError(
            f"{path}: image is {len(shape)}-D with shape {shape}; only 3-D or 4-D with a singleton last axis "
            f"(X,Y,Z,1) is supported, extract the T1 volume first."
        )
    if len(shape) < 3:
        raise InputError(f"{path}: image is {len(shape)}-D with shape {shape}; a 3-D T1 volume is needed.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise InputError(f"{path}: cannot read the voxels ({reason}); the file is truncated or corrupt, re-download or re-export it.") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected one 3-D scalar volume, found {image.GetDimension()}-D with "
                         f"{image.GetNumberOfComponentsPerPixel()} components; extract the T1 volume first.")
    return image


def affine(image: sitk.Image) -> np.ndarray:
    """The 4×4 index-to-world matrix (ITK's LPS convention)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def require_same_grid(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    """A label file must share its image's shape and affine (within 1e-4)."""
    if image.GetSize() != label.GetSize():
        raise InputError(
            f"{label_path}: label shape {label.GetSize()} differs from image {image_path.name} shape {image.GetSize()}; "
            f"use the label file that belongs to this image."
        )
    difference = float(np.abs(affine(image) - affine(label)).max())
    if difference > AFFINE_TOLERANCE:
        raise InputError(
            f"{label_path}: label affine differs from image {image_path.name} by {difference:.3g} "
            f"(tolerance {AFFINE_TOLERANCE}); resample the label onto the image grid or fix its header."
        )


def require_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{path}: image holds {bad} NaN or infinite voxels; fix or re-export the image.")


def write_volume(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write `array` (z,y,x order) with `reference`'s exact geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), True, 1)  # fastest zlib level: nnU-Net re-reads these once to preprocess
