"""How `segment` predicts: test-time mirroring, the sliding window's step, soft volumes and QC pictures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..core.choices import fraction


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment. tta None: on for CUDA, off for the CPU (mirroring costs 2-6x there: bench/segment.py);
    step_size: the sliding window's step as a fraction of its size (nnU-Net's tile step; a baseline's overlap is
    1 - step_size); strip: skull-strip each scan with deepbet first (segment/strip.py); resample: a baseline
    resamples a scan far from its training spacing to it (baselines/spacing.py; nnU-Net always resamples)."""

    tta: Optional[bool] = None
    step_size: float = 0.5
    soft_volumes: bool = False
    qc: bool = True
    qc_sheet: bool = False
    strip: bool = False
    resample: bool = True

    def __post_init__(self) -> None:
        fraction("--step-size", self.step_size, example="e.g. 0.5 (nnU-Net's default)")

    def resolved(self, device: str) -> "SegmentOptions":
        """These options with TTA decided for the device that will run."""
        if self.tta is not None:
            return self
        from ..core.devices import torch_device

        return dataclasses.replace(self, tta=torch_device(device).type == "cuda")
