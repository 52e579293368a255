"""What training looked like, and the warnings for a scan that does not look like it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..core.manifest import Manifest
from ..core.workspace import Workspace
from ..data.volumes import Volume
from ..nnunet.plans import read_dataset_fingerprint

# warning thresholds: far enough from training that a user should look before publishing the numbers
INTENSITY_RATIO = 2.0  # scan's 99.5th percentile of brain voxels vs training's, either way
SKULL_ZERO_FRACTION = 0.2  # a skull-stripped T1 is mostly exact zeros; IBSR's are ~80 % zeros
SPACING_RATIO = 1.5  # per axis, either way
INTENSITY_WARNING = "intensity far from training"


@dataclass(frozen=True)
class Reference:
    """The training images' 99.5th intensity percentile (nnU-Net's fingerprint) and median spacing."""

    intensity_995: Optional[float]
    spacing: tuple[float, float, float]


def training_reference(ws: Workspace, manifest: Manifest) -> Reference:
    """From nnU-Net's dataset fingerprint (when planned) and the workspace's conversion manifest."""
    fingerprint = read_dataset_fingerprint(ws)
    intensity = None
    if fingerprint is not None:
        intensity = fingerprint["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"]
    return Reference(intensity, manifest.training_spacing)


def scan_warnings(volume: Volume, reference: Reference) -> list[str]:
    """What is far from training about a scan in the training orientation (spacing compared axis by axis)."""
    found = []
    brain = volume.array[volume.array != 0]
    zero_fraction = 1 - brain.size / volume.array.size
    if zero_fraction < SKULL_ZERO_FRACTION:
        found.append(f"does not look skull-stripped: only {zero_fraction:.0%} of voxels are 0 (pass --strip to strip "
                     f"it first)")
    if reference.intensity_995 and brain.size:
        high = float(np.percentile(brain, 99.5))
        ratio = high / reference.intensity_995
        if not 1 / INTENSITY_RATIO <= ratio <= INTENSITY_RATIO:
            found.append(f"{INTENSITY_WARNING}: 99.5th percentile {high:.4g} vs {reference.intensity_995:.4g}")
    ratios = [s / r for s, r in zip(volume.spacing, reference.spacing)]
    if any(not 1 / SPACING_RATIO <= r <= SPACING_RATIO for r in ratios):
        found.append(f"spacing {tuple(round(s, 3) for s in volume.spacing)} mm is far from training's "
                     f"{tuple(round(s, 3) for s in reference.spacing)} mm")
    return found
