"""Reading and writing NIfTI/Analyze volumes: checked reads, 4-D squeezed to 3-D, headers kept, fast gzip (ISA-L)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from ..core.errors import InputError

AFFINE_TOLERANCE = 1e-4
GZIP_LEVEL = 1  # ISA-L level 1: 7x faster than zlib level 1 on IBSR volumes, and slightly smaller


@dataclass(frozen=True)
class Volume:
    """One 3-D volume: voxels in file order (X, Y, Z) and the NIfTI header that places them in the world."""

    array: np.ndarray
    header: nib.Nifti1Header

    @property
    def affine(self) -> np.ndarray:
        return self.header.get_best_affine()

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(z) for z in self.header.get_zooms()[:3])

    def reoriented(self, reorientation) -> "Volume":
        """This volume with its axes permuted and flipped by a core.orientation.Reorientation (no resampling):
        every voxel keeps its place in the world, the affine and voxel sizes follow."""
        if reorientation.identity:
            return self
        array = reorientation.apply(self.array)
        affine = reorientation.affine(self.affine, self.array.shape)
        header = self.header.copy()
        header.set_data_shape(array.shape)
        header.set_zooms(tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))
        header.set_sform(affine, code=max(int(self.header["sform_code"]), 1))
        header.set_qform(affine, code=max(int(self.header["qform_code"]), 1))
        return Volume(array, header)

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same geometry holding other voxels (a label map, a preprocessed image)."""
        header = self.header.copy()
        header.set_data_dtype(array.dtype)
        return Volume(array, header)


def _open(path: Path) -> nib.spatialimages.SpatialImage:
    """The file parsed by nibabel. A .gz is inflated whole first, so its CRC and length are checked:
    ITK and nibabel's partial reads return zeros or garbage for truncated or damaged streams, silently."""
    if path.name.endswith(".gz"):
        raw = igzip.decompress(path.read_bytes())
        try:
            return nib.Nifti1Image.from_bytes(raw)
        except Exception:
            return nib.Nifti2Image.from_bytes(raw)
    return nib.load(str(path))


def read_volume(path: str | os.PathLike) -> Volume:
    """A 3-D volume; a 4-D file with a singleton last axis is squeezed, anything else refused."""
    path = Path(path)
    try:
        image = _open(path)
        shape = tuple(int(n) for n in image.shape)
        if len(shape) == 4 and shape[3] != 1 or len(shape) > 4 or len(shape) < 3:
            raise InputError(
                f"{path}: image is {len(shape)}-D with shape {shape}; only 3-D or 4-D with a singleton last axis "
                f"(X,Y,Z,1) is supported, extract the T1 volume first."
            )
        array = np.asanyarray(image.dataobj).reshape(shape[:3], order="A")
    except InputError:
        raise
    except Exception as err:  # gzip, nibabel and numpy each raise their own types for broken files
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{path}: cannot read the volume ({reason[:200]}); the file is truncated or corrupt, "
                         f"re-download or re-export it.") from None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{path}: volume holds {bad} NaN or infinite voxels; fix or re-export it.")
    if isinstance(image, nib.Nifti1Image):
        header = image.header.copy()  # keep sform/qform exactly as the source has them
    else:  # Analyze (and NIfTI-2): carry its affine into a NIfTI-1 header
        header = nib.Nifti1Image(array, image.affine).header
    header.set_data_shape(array.shape)
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(np.nan, np.nan)  # the voxels are already scaled by nibabel
    return Volume(array, header)


def require_same_grid(image: Volume, label: Volume, image_path: Path, *, label_path: Path) -> None:
    """A label file must share its image's shape and affine (within 1e-4)."""
    if image.array.shape != label.array.shape:
        raise InputError(
            f"{label_path}: label shape {label.array.shape} differs from image {image_path.name} shape "
            f"{image.array.shape}; use the label file that belongs to this image."
        )
    difference = float(np.abs(image.affine - label.affine).max())
    if difference > AFFINE_TOLERANCE:
        raise InputError(
            f"{label_path}: label affine differs from image {image_path.name} by {difference:.3g} "
            f"(tolerance {AFFINE_TOLERANCE}); resample the label onto the image grid or fix its header."
        )


def write_volume(volume: Volume, path: Path) -> None:
    """Write a 3-D .nii.gz with `volume`'s header (geometry exactly as read)."""
    image = nib.Nifti1Image(volume.array, None, header=volume.header)
    path.write_bytes(igzip.compress(image.to_bytes(), GZIP_LEVEL))
