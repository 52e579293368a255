"""The QC score on real `segment` runs: it falls as noise grows, it flags a scan whose volumes are impossible, the
summary marks the scans under --qc-threshold, and the contact sheet starts with the lowest score."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import BASELINE, segment_with_baseline, trained_phantom_baseline

NOISE = (0.0, 0.1, 0.2, 0.4, 0.8)  # σ as a fraction of the brain's 99th percentile


@pytest.fixture(scope="module")
def trained(converted_ws, tmp_path_factory):
    """A unet2d__dice_ce trained for 6 × 50 iterations on the phantoms (width 8): confident where the scan is clean."""
    return trained_phantom_baseline(converted_ws, tmp_path_factory.mktemp("quality") / "ws", epochs=6,
                                    iterations=50, width=8, batch_size=4)


@pytest.fixture(scope="module")
def noisy(phantom_root, tmp_path_factory):
    source = nib.load(str(phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"))
    array = np.asanyarray(source.dataobj).astype(np.float32)
    high = np.percentile(array[array > 0], 99)
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("noisy")
    for sigma in NOISE:
        noisy = np.where(array > 0, array + rng.normal(0, sigma * high, array.shape), 0).astype(np.float32)
        nib.save(nib.Nifti1Image(noisy, source.affine), str(folder / f"noise{int(sigma * 100):03d}.nii.gz"))
    return folder


def test_the_score_falls_as_noise_grows_and_the_sheet_starts_with_the_lowest(trained, noisy, tmp_path, monkeypatch):
    import ibsr_nnunet.segment.qc as pictures

    drawn, draw = [], pictures.draw_sheet
    monkeypatch.setattr(pictures, "draw_sheet", lambda done, *a: drawn.extend(d[0] for d in done) or draw(done, *a))
    out = tmp_path / "out"
    result = segment_with_baseline(trained, str(noisy), "--output", str(out), "--qc-sheet", "--qc-threshold", "1")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "volumes.csv").set_index("scan")
    scores = [table.loc[f"noise{int(s * 100):03d}", "qc_score"] for s in NOISE]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert drawn == [f"noise{int(s * 100):03d}" for s in reversed(NOISE)] and (out / "qc_sheet.png").is_file()
    assert "low confidence" in table.loc["noise080", "qc_flags"]
    assert "5 scans to check (QC score below 1)" in " ".join(result.output.split())


def test_a_scan_read_with_voxels_twice_too_large_is_flagged(trained, phantom_root, tmp_path):
    source = nib.load(str(phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"))
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz", inputs / "right.nii.gz")
    affine = source.affine.copy()
    affine[:3, :3] *= 2  # every volume ×8
    nib.save(nib.Nifti1Image(np.asanyarray(source.dataobj), affine), str(inputs / "doubled.nii.gz"))
    out = tmp_path / "out"
    result = segment_with_baseline(trained, str(inputs), "--output", str(out), "--no-qc")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "volumes.csv").set_index("scan")
    flags = table.loc["doubled", "qc_flags"]
    assert "implausible for an adult brain" in flags and "WM_ml" in flags and "spacing" in flags
    assert table.loc["doubled", "total_ml"] == pytest.approx(8 * table.loc["right", "total_ml"], rel=0.05)
    # halved for the total, × 0.8 for the spacing warning, and the volumes further out still
    assert table.loc["doubled", "qc_score"] <= 0.4 * table.loc["right", "qc_score"] + 1e-4
    assert BASELINE == table.loc["right", "model"]


def test_a_row_written_without_a_qc_score_is_segmented_again(trained, phantom_root, tmp_path):
    scan = phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"
    out = tmp_path / "out"
    assert segment_with_baseline(trained, str(scan), "--output", str(out), "--no-qc").exit_code == 0
    table = pd.read_csv(out / "volumes.csv")
    table.drop(columns=["qc_score", "qc_flags"]).to_csv(out / "volumes.csv", index=False)  # an older version's
    again = segment_with_baseline(trained, str(scan), "--output", str(out), "--no-qc")
    assert again.exit_code == 0 and "reused" not in again.output and "already up to date" not in again.output
    assert pd.read_csv(out / "volumes.csv")["qc_score"].iloc[0] == pytest.approx(table["qc_score"].iloc[0])
    third = segment_with_baseline(trained, str(scan), "--output", str(out), "--no-qc")
    assert "nothing redone" in " ".join(third.output.split())
