"""`segment --strip` with deepbet on a real IBSR scan inside a synthetic head (data/phantom.py `with_head`), stored
in another orientation: the brain mask lands on the input's grid around the brain, TIV is reported, nothing outside
the mask is labelled, the QC picture is drawn, and a re-run reuses what it made."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from helpers import reoriented_copy, segment_with_baseline
from ibsr_nnunet.data.phantom import with_head

pytest.importorskip("deepbet", reason='segment --strip needs the optional extra: pip install ".[strip]"')


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def head(shared_ibsr18, tmp_path_factory):
    """IBSR_01 (Training_Set) inside a synthetic head, stored with its axes permuted and flipped; and its brain."""
    source = nib.load(str(shared_ibsr18 / "Training_Set" / "IBSR_01" / "IBSR_01.nii.gz"))
    brain = np.asanyarray(source.dataobj)[..., 0]
    folder = tmp_path_factory.mktemp("head")
    ras = folder / "ras.nii.gz"
    nib.save(nib.Nifti1Image(with_head(brain, source.header.get_zooms()[:3]), source.affine), str(ras))
    turned = reoriented_copy(ras, folder / "head.nii.gz", (2, 0, 1), (1,))
    truth = reoriented_copy_array(ndimage.binary_fill_holes(brain != 0), (2, 0, 1), (1,))
    return turned, truth


def reoriented_copy_array(array: np.ndarray, perm, flips) -> np.ndarray:
    array = np.transpose(array, perm)
    for axis in flips:
        array = np.flip(array, axis)
    return np.ascontiguousarray(array)


def test_strip_finds_the_brain_of_a_head_on_its_own_grid_and_reports_tiv(trained_baseline_ws, head, tmp_path):
    scan, truth = head
    out = tmp_path / "out"
    result = segment_with_baseline(trained_baseline_ws, str(scan), "--output", str(out), "--strip")
    assert result.exit_code == 0, result.output
    mask_image = nib.load(str(out / "head_brainmask.nii.gz"))
    np.testing.assert_allclose(mask_image.affine, nib.load(str(scan)).affine)
    mask = np.asanyarray(mask_image.dataobj).astype(bool)
    kept = float((mask & truth).sum()) / float(truth.sum())  # measured 0.9992, Dice 0.969 (IBSR strips tighter)
    assert mask.shape == truth.shape and kept >= 0.99 and dice(mask, truth) >= 0.95, (kept, dice(mask, truth))
    row = pd.read_csv(out / "volumes.csv").iloc[0]
    voxel_ml = float(np.prod(mask_image.header.get_zooms()[:3])) / 1000
    assert bool(row["strip"]) and 1300 < row["tiv_ml"] < mask.sum() * voxel_ml  # TIV: deepbet's mask, before growing
    tissue = np.asanyarray(nib.load(str(out / "head_tissue.nii.gz")).dataobj)
    assert not tissue[~mask].any() and row["total_ml"] <= mask.sum() * voxel_ml + 1e-6
    assert "skull-stripped" not in str(row["warnings"]) and (out / "head_qc.png").is_file()
    again = segment_with_baseline(trained_baseline_ws, str(scan), "--output", str(out), "--strip")
    assert again.exit_code == 0 and "reused" in again.output


def test_the_same_head_without_strip_is_warned_to_pass_it(trained_baseline_ws, head, tmp_path):
    scan, _ = head
    out = tmp_path / "out"
    result = segment_with_baseline(trained_baseline_ws, str(scan), "--output", str(out), "--no-qc")
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "volumes.csv").iloc[0]
    assert "does not look skull-stripped" in row["warnings"] and "pass --strip" in row["warnings"]
    assert not bool(row["strip"]) and np.isnan(row["tiv_ml"]) and not (out / "head_brainmask.nii.gz").exists()
