"""A scan `segment` is given, and what became of it: two immutable values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .quality import Quality


@dataclass(frozen=True)
class Scan:
    """One input scan and where its map goes."""

    input: Path
    name: str  # output name, without _tissue.nii.gz / _qc.png
    output: Path


@dataclass(frozen=True)
class ScanOutcome:
    """What segmenting one scan gave: its volumes and QC picture, or its error; or the row an earlier `segment` wrote
    for the same input, model and options (`reused`)."""

    scan: Scan
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    error: Optional[str] = None
    volumes: dict[str, float] = field(default_factory=dict)
    reused: Optional[dict] = None  # the volumes.csv row an earlier `segment` wrote
    qc: Optional[Path] = None
    input_axcodes: str = ""  # the input's axes, as turned to the model's training orientation
    quality: Optional[Quality] = None  # segment/quality.py: its QC score and flags

    @property
    def quality_score(self) -> float:
        """The QC score, this run's or the reused row's; NaN when there is none."""
        if self.reused is not None:
            return float(self.reused.get("qc_score", math.nan))
        return self.quality.score if self.quality is not None else math.nan

    @property
    def input(self) -> Path:
        return self.scan.input

    @property
    def name(self) -> str:
        return self.scan.name

    @property
    def output(self) -> Path:
        return self.scan.output


def brain_mask_path(scan: Scan) -> Path:
    """Where `segment --strip` writes the scan's brain mask, beside its map."""
    return scan.output.with_name(f"{scan.name}_brainmask.nii.gz")
