"""Optional intensity preprocessing with SimpleITK: N4 bias-field correction and anisotropic diffusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import SimpleITK as sitk


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


def apply(image: sitk.Image, settings: Preprocessing) -> sitk.Image:
    """The preprocessed image (float32, zero outside the brain as before), or `image` untouched."""
    if not settings.enabled:
        return image
    work = sitk.Cast(image, sitk.sitkFloat32)
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
    return sitk.Cast(sitk.Mask(work, mask), sitk.sitkFloat32)
