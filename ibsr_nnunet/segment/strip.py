"""Skull stripping before segmentation (`segment --strip`) with deepbet, the optional extra `strip`: a brain mask
for each scan on the grid it is given, and the total intracranial volume (TIV) deepbet measures."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.devices import torch_device
from ..core.errors import InputError
from ..core.orientation import towards
from ..data.volumes import Volume

INSTALL = 'pip install "ibsr-nnunet[strip]"'
THRESHOLD = 0.5  # deepbet's default on its mask probability
# The mask applied is deepbet's grown by one voxel (6-connected): on the shared, already stripped IBSR scans it keeps
# 99.8-99.95 % of the labelled brain voxels, against 99.3-99.8 % for deepbet's own mask (its edge cuts cortex).
# TIV is deepbet's own mask, as its authors define and validate it.
GROW_VOXELS = 1
RAS = ("R", "A", "S")  # deepbet's models take scans in the closest canonical (RAS) orientation


def require_deepbet() -> None:
    """Refuse `--strip` in one sentence when deepbet is not installed."""
    try:
        import deepbet  # noqa: F401
    except ImportError:
        raise InputError(f"--strip needs the optional package deepbet, which is not installed; install it with "
                         f"`{INSTALL}`, or leave out --strip.") from None


@dataclass(frozen=True)
class Stripped:
    """A scan's brain mask (bool, on the grid of the volume it was made from) and its TIV in mL."""

    mask: np.ndarray
    tiv_ml: float


class BrainExtractor:
    """deepbet's two models (bounding box, then mask), loaded once on the device `segment` uses (auto, cpu, cuda)."""

    def __init__(self, device: str):
        from deepbet import BrainExtraction

        # deepbet ships TorchScript archives, which torch.jit.load runs in TorchScript's interpreter: no Python
        # pickle is executed, and torch.load's weights_only does not apply to them
        self._bet = BrainExtraction(no_gpu=True)
        self._device = torch_device(device)
        self._bet.model.to(self._device)
        self._bet.bbox_model.to(self._device)

    def __call__(self, volume: Volume) -> Stripped:
        """The brain of `volume` (any orientation): deepbet's mask grown by GROW_VOXELS, on the volume's own grid."""
        import torch
        from deepbet.utils import dilate

        turn = towards(volume.affine, RAS)
        ras = np.ascontiguousarray(volume.reoriented(turn).array, dtype=np.float32)
        try:
            with torch.no_grad():
                probability = self._bet.run_model(ras)
            brain = self._bet.postprocess(probability > THRESHOLD, 0)
        except (AssertionError, ValueError) as err:  # no foreground for its bounding box, or no mask component
            raise InputError(f"deepbet found no brain in the scan ({err or 'an empty mask'}); check that it is a T1 "
                             f"head scan, or leave out --strip") from None
        tiv_ml = float(brain.sum()) * math.prod(volume.spacing) / 1000.0
        grown = dilate(brain.copy(), GROW_VOXELS).astype(bool)
        return Stripped(turn.undo(grown), tiv_ml)
