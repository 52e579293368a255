"""segment/quality.py: the QC score and its flags, against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from ibsr_nnunet.segment.quality import COMPARED, LOG_SCALE, TrainingVolumes, assess, compared

TYPICAL = {"CSF_ml": 20.0, "GM_ml": 700.0, "WM_ml": 450.0, "total_ml": 1170.0, "GM_fraction": 0.6, "WM_fraction": 0.38}
SD = {"CSF_ml": 0.5, "GM_ml": 0.1, "WM_ml": 0.1, "total_ml": 0.1, "GM_fraction": 0.02, "WM_fraction": 0.02}
REFERENCE = TrainingVolumes({k: compared(k, v) for k, v in TYPICAL.items()}, SD, 8)


def at(measure: str, z: float) -> float:
    """The value of `measure` that lies z SDs from the reference."""
    value = REFERENCE.mean[measure] + z * SD[measure]
    return math.expm1(value) if measure in LOG_SCALE else value


def volumes(**z) -> dict:
    return {**TYPICAL, **{k: at(k, v) for k, v in z.items()}}


@pytest.mark.parametrize("measured, confidence, warnings, score, flags", [
    (volumes(), 0.97, (), 1.0, ()),
    (volumes(), 0.99, (), 1.0, ()),  # the confidence term stops at 1
    (volumes(CSF_ml=2.0), 0.97, (), 1.0, ()),  # inside the free band
    (volumes(CSF_ml=4.0), 0.97, (), 0.5,  # 2 SD beyond the free band: 1 / (1 + (2/2)²)
     ("CSF_ml 154 is +4.0 SD from the training cases' 20",)),
    (volumes(CSF_ml=-6.0), 0.97, (), 1 / (1 + 2.0 ** 2),  # log scale: CSF nearly gone is far out
     ("CSF_ml 0.0455 is -6.0 SD from the training cases' 20",)),
    (volumes(GM_fraction=-3.5), 0.97, (), 1 / (1 + 0.75 ** 2),
     ("GM_fraction 0.53 is -3.5 SD from the training cases' 0.6",)),
    (volumes(), 0.835, (), (0.585 / 0.72) ** 2,
     ("low confidence: mean highest probability 0.835 over the tissue voxels",)),
    (volumes(), 0.70, (), (0.45 / 0.72) ** 2,
     ("low confidence: mean highest probability 0.700 over the tissue voxels",)),
    (volumes(), None, (), 0.0, ("no tissue predicted, or no confidence measured",)),
    (volumes(), 0.25, (), 0.0, ("low confidence: mean highest probability 0.250 over the tissue voxels",)),
    (volumes(), 0.97, ("oblique by 20 degrees", "spacing far"), 0.64, ("oblique by 20 degrees", "spacing far")),
    # z-scoring undoes an intensity scale: flagged, not scored
    (volumes(), 0.97, ("intensity far from training: 99.5th percentile 4e+03 vs 1e+03", "spacing far"), 0.8,
     ("intensity far from training: 99.5th percentile 4e+03 vs 1e+03", "spacing far")),
])
def test_the_score_is_the_product_of_its_terms(measured, confidence, warnings, score, flags):
    quality = assess(measured, confidence, warnings, REFERENCE)
    assert quality.score == pytest.approx(score, abs=1e-4) and quality.flags == flags


def test_an_implausible_total_halves_the_score_and_says_so():
    """A scan read with voxels twice too large: every volume ×8 (the fractions unchanged)."""
    measured = {**TYPICAL, **{k: TYPICAL[k] * 8 for k in ("CSF_ml", "GM_ml", "WM_ml", "total_ml")}}
    quality = assess(measured, 0.97, (), REFERENCE)
    assert quality.flags[-1] == "total 9360 mL is implausible for an adult brain (900-2000 mL)"
    assert [f.split()[0] for f in quality.flags[:-1]] == ["CSF_ml", "GM_ml", "WM_ml", "total_ml"]
    worst = max(REFERENCE.z(k, measured[k]) for k in LOG_SCALE)  # total: log(9361 / 1171) / 0.1 ≈ 20.8 SD
    assert worst == pytest.approx((math.log1p(9360) - math.log1p(1170)) * 10)
    assert quality.score == pytest.approx(0.5 / (1 + ((worst - 2) / 2) ** 2), abs=1e-4)


def test_measures_missing_from_a_row_are_not_compared():
    measured = {k: v for k, v in TYPICAL.items() if k != "CSF_ml"}
    assert set(COMPARED) - set(measured) == {"CSF_ml"}
    assert assess(measured, 0.97, (), REFERENCE).score == 1.0
