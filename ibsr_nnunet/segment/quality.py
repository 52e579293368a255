"""A QC score per segmented scan (0-1, higher is better) and the flags behind it: tissue volumes and fractions far
from the training cases', a total implausible for an adult brain, low model confidence, and the scan warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..core.jsonfile import read_json_or_none
from ..core.manifest import Manifest
from ..core.provenance import KEY
from ..core.workspace import Workspace
from ..data.volumes import read_volume
from .measures import tissue_volumes
from .reference import INTENSITY_WARNING

COMPARED = ("CSF_ml", "GM_ml", "WM_ml", "total_ml", "GM_fraction", "WM_fraction")
LOG_SCALE = ("CSF_ml", "GM_ml", "WM_ml", "total_ml")  # compared as log(1 mL + volume): a tissue gone is far out
Z_FLAG = 3.0  # standard deviations from the training cases' mean that flag a measure
Z_FREE = 2.0  # the volume term starts to fall beyond this many
Z_SCALE = 2.0  # ... and is 1/2 this many SDs further out
SD_FLOOR = 0.05  # of the training mean: a handful of alike training cases must not make every scan an outlier
ADULT_TOTAL_ML = (900.0, 2000.0)  # CSF + GM + WM of an adult brain (IBSR18's: 1,000-1,650 mL)
CONFIDENCE_FLAG = 0.85  # mean highest class probability over the tissue voxels
CONFIDENCE_RANGE = (0.25, 0.97)  # mapped to 0 and 1 of the confidence term (0.25: four equally likely classes)
WARNING_FACTOR = 0.8  # each scan warning (not stripped, spacing, oblique) multiplies the score
# every model z-scores its input: intensities x 4 gave the identical map (bench/robustness.py), so that warning is a
# flag only
UNSCORED_WARNINGS = (INTENSITY_WARNING,)


@dataclass(frozen=True)
class TrainingVolumes:
    """The mean and standard deviation of each COMPARED measure over the workspace's training cases' labels (volumes
    on a log scale: they are skewed, and a tissue that vanishes must stand out)."""

    mean: dict[str, float]  # of each measure as compared (log(1 + mL) for LOG_SCALE)
    sd: dict[str, float]
    cases: int

    def z(self, measure: str, value: float) -> float:
        return (compared(measure, value) - self.mean[measure]) / self.sd[measure]


def compared(measure: str, value: float) -> float:
    return math.log1p(max(value, 0.0)) if measure in LOG_SCALE else value


TRAINING_VOLUMES_FILE = "training_volumes.json"  # a bundle's copy (models/bundle.py): it carries no labelsTr


def saved_training_volumes(ws: Workspace, manifest: Manifest) -> Optional[TrainingVolumes]:
    """The copy a model bundle carries for its dataset (at the workspace root), or None."""
    saved = read_json_or_none(ws.root / TRAINING_VOLUMES_FILE)
    if not isinstance(saved, dict) or saved.get(KEY) != manifest.fingerprint:
        return None
    try:
        return TrainingVolumes({k: float(saved["mean"][k]) for k in COMPARED},
                               {k: float(saved["sd"][k]) for k in COMPARED}, int(saved["cases"]))
    except (KeyError, TypeError, ValueError):
        return None


def training_volumes_record(volumes: TrainingVolumes, manifest: Manifest) -> dict:
    return {"mean": volumes.mean, "sd": volumes.sd, "cases": volumes.cases, KEY: manifest.fingerprint}


def training_volumes(ws: Workspace, manifest: Manifest) -> TrainingVolumes:
    """From the training cases' label maps (labelsTr), on their own voxel sizes; in a workspace installed from a
    model bundle, from the copy it carries."""
    if (saved := saved_training_volumes(ws, manifest)) is not None:
        return saved
    rows = []
    for _, _, label in ws.cases("train", manifest):
        volume = read_volume(label)
        rows.append(tissue_volumes(np.asarray(volume.array).astype(np.uint8), volume.spacing))
    values = {k: [compared(k, r[k]) for r in rows] for k in COMPARED}
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    sd = {k: max(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, SD_FLOOR * abs(mean[k])) for k, v in values.items()}
    return TrainingVolumes(mean, sd, len(rows))


@dataclass(frozen=True)
class Quality:
    score: float
    flags: tuple[str, ...]


def assess(volumes: dict[str, float], confidence: Optional[float], warnings: tuple[str, ...],
           reference: TrainingVolumes) -> Quality:
    """The score is the product of a confidence term (the confidence mapped linearly from CONFIDENCE_RANGE onto 0-1,
    squared), a volume term (1 while every measure is within Z_FREE SDs of training's, then falling as
    1 / (1 + (excess / Z_SCALE)²), so that even far outliers stay ordered), 0.5 for an implausible total, and
    WARNING_FACTOR per scan warning (but the UNSCORED_WARNINGS, flags only)."""
    flags = []
    z = {k: reference.z(k, volumes[k]) for k in COMPARED if math.isfinite(volumes.get(k, math.nan))}
    for k, value in z.items():
        if abs(value) > Z_FLAG:
            typical = math.expm1(reference.mean[k]) if k in LOG_SCALE else reference.mean[k]
            flags.append(f"{k} {volumes[k]:.3g} is {value:+.1f} SD from the training cases' {typical:.3g}")
    worst = max((abs(v) for v in z.values()), default=0.0)
    volume_term = 1.0 / (1.0 + (max(0.0, worst - Z_FREE) / Z_SCALE) ** 2)
    total = volumes.get("total_ml", math.nan)
    low, high = ADULT_TOTAL_ML
    total_term = 1.0
    if not low <= total <= high:
        flags.append(f"total {total:.0f} mL is implausible for an adult brain ({low:.0f}-{high:.0f} mL)")
        total_term = 0.5
    if confidence is None or not math.isfinite(confidence):
        flags.append("no tissue predicted, or no confidence measured")
        confidence_term = 0.0
    else:
        if confidence < CONFIDENCE_FLAG:
            flags.append(f"low confidence: mean highest probability {confidence:.3f} over the tissue voxels")
        bottom, top = CONFIDENCE_RANGE
        confidence_term = min(1.0, max(0.0, (confidence - bottom) / (top - bottom))) ** 2
    flags += warnings
    scored = [w for w in warnings if not w.startswith(UNSCORED_WARNINGS)]
    score = confidence_term * volume_term * total_term * WARNING_FACTOR ** len(scored)
    return Quality(round(score, 4), tuple(flags))
