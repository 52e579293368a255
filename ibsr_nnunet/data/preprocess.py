"""Optional intensity preprocessing with SimpleITK: N4 bias-field correction and anisotropic diffusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from .volumes import Volume


@dataclass(frozen=True)
class Preprocessing:
    """What to apply to each T1 image before nnU-Net sees it (recorded in the manifest)."""

    n4: bool = False
    denoise: bool = False
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 30)
    denoise_iterations: int = 5
    denoise_conductance: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.n4 or self.denoise

    def as_record(self) -> dict:
        record = asdict(self)
        record["n4_iterations"] = list(self.n4_iterations)
        return record


def apply(volume: Volume, settings: Preprocessing) -> Volume:
    """The preprocessed volume (float32, zero outside the brain as before), or `volume` untouched."""
    if not settings.enabled:
        return volume
    # nibabel's (X,Y,Z) array is Fortran-ordered: its transpose is ITK's C-ordered (Z,Y,X), no copy.
    image = sitk.GetImageFromArray(volume.array.T.astype(np.float32))
    image.SetSpacing(volume.spacing)
    work = image
    mask = sitk.Cast(image != 0, sitk.sitkUInt8)
    if settings.n4:
        # Fit the bias field on a shrunken copy (minutes -> seconds), then divide it out at full resolution.
        shrink = [settings.n4_shrink] * image.GetDimension()
        small = sitk.Shrink(work, shrink)
        small_mask = sitk.Shrink(mask, shrink)
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations(list(settings.n4_iterations))
        corrector.Execute(small, small_mask)
        log_bias = corrector.GetLogBiasFieldAsImage(work)
        work = work / sitk.Exp(log_bias)
    if settings.denoise:
        work = sitk.CurvatureAnisotropicDiffusion(
            work, timeStep=0.0625, conductanceParameter=settings.denoise_conductance,
            numberOfIterations=settings.denoise_iterations,
        )
    result = sitk.GetArrayFromImage(sitk.Cast(sitk.Mask(work, mask), sitk.sitkFloat32)).T
    return volume.with_array(result)
