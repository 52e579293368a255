"""Reading and writing volumes: voxels through nibabel (checked), geometry and writing through SimpleITK (as nnU-Net reads them)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .errors import InputError

AFFINE_TOLERANCE = 1e-4

# ITK warns on every Analyze header read that the format is deprecated; the files are still read correctly.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


def _open(path: Path) -> nib.spatialimages.SpatialImage:
    """The file parsed by nibabel. A .gz is inflated whole first, so its CRC and length are checked:
    ITK (and nibabel's partial reads) silently return zeros or garbage for truncated or damaged streams."""
    if path.name.endswith(".gz"):
        raw = gzip.decompress(path.read_bytes())
        try:
            return nib.Nifti1Image.from_bytes(raw)
        except Exception:
            return nib.Nifti2Image.from_bytes(raw)
    return nib.load(str(path))


def _geometry(path: Path) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) as ITK, and so nnU-Net, reads them; header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(dim, dim)[:3, :3]
    return reader.GetSpacing()[:3], reader.GetOrigin()[:3], tuple(direction.ravel())


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """A 3-D image; a 4-D file with a singleton last axis is squeezed, anything else refused."""
    path = Path(path)
    try:
        image = _open(path)
        shape = tuple(int(n) for n in image.shape)
        if len(shape) == 4 and shape[3] != 1 or len(shape) > 4 or len(shape) < 3:
            raise InputError(
                f"{path}: image is {len(shape)}-D with shape {shape}; only 3-D or 4-D with a singleton last axis "
                f"(X,Y,Z,1) is supported, extract the T1 volume first."
            )
        voxels = np.asanyarray(image.dataobj).reshape(shape[:3], order="A")
        spacing, origin, direction = _geometry(path)
    except InputError:
        raise
    except Exception as err:  # zlib, gzip, nibabel and ITK each raise their own types for broken files
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{path}: cannot read the volume ({reason[:200]}); the file is truncated or corrupt, "
                         f"re-download or re-export it.") from None
    if voxels.dtype.kind == "f" and not np.all(np.isfinite(voxels)):
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        raise InputError(f"{path}: volume holds {bad} NaN or infinite voxels; fix or re-export it.")
    # nibabel's (X,Y,Z) array is Fortran-ordered, so its transpose is ITK's C-ordered (Z,Y,X) without a copy.
    result = sitk.GetImageFromArray(voxels.T)
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    result.SetDirection(direction)
    return result


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


def write_volume(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write `array` (z,y,x order) with `reference`'s exact geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), True, 1)  # fastest zlib level: nnU-Net re-reads these once to preprocess
