"""`segment` with a briefly trained baseline: phantoms, renamed/.nii/Analyze inputs, a corrupt file, real Test_Set
scans."""

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import ORIENTATIONS, carried_back, invoke, reoriented_copy
from ibsr_nnunet.core.workspace import Workspace

MODEL = "unet2d__dice_ce"


@pytest.fixture(scope="module")
def trained_real(shared_ibsr18, tmp_path_factory) -> Workspace:
    """The shared real IBSR18 converted, with a unet2d__dice_ce trained for seconds (orientation, not accuracy)."""
    ws = Workspace.open(tmp_path_factory.mktemp("segment-real") / "ws")
    for args in (["convert", str(shared_ibsr18)],
                 ["baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", "1",
                  "--iterations-per-epoch", "4", "--width", "4", "--patch-size", "64", "--batch-size", "2",
                  "--device", "cpu"]):
        result = invoke(ws, *args)
        assert result.exit_code == 0, result.output
    return ws


@pytest.mark.integration
def test_real_scans_in_several_orientations_and_an_analyze_copy(trained_real, shared_ibsr18, tmp_path):
    """Real shared scans, permuted and flipped with the affine kept: the map carried back is identical on CPU; an
    Analyze copy (no orientation stored: nibabel's convention, x mirrored) is segmented on its own grid."""
    source = shared_ibsr18 / "Test_Set" / "IBSR_02" / "IBSR_02.nii.gz"
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(source, inputs / "original.nii.gz")
    for i, (perm, flips) in enumerate(ORIENTATIONS[1:], start=1):
        reoriented_copy(source, inputs / f"turned{i}.nii.gz", perm, flips)
    volume = nib.load(str(source))
    analyze = inputs / "analyze.hdr"
    nib.save(nib.AnalyzeImage(np.asanyarray(volume.dataobj)[..., 0], None, nib.AnalyzeHeader()), str(analyze))
    out = tmp_path / "out"
    result = invoke(trained_real, "segment", str(inputs), "--output", str(out), "--model", MODEL, "--device", "cpu",
                    "--no-qc")
    assert result.exit_code == 0, result.output
    expected = np.asanyarray(nib.load(str(out / "original_tissue.nii.gz")).dataobj)
    for i, (perm, flips) in enumerate(ORIENTATIONS[1:], start=1):
        back = np.asanyarray(nib.load(str(out / f"turned{i}_tissue.nii.gz")).dataobj)
        np.testing.assert_array_equal(carried_back(back, perm, flips), expected)
    table = pd.read_csv(out / "volumes.csv", dtype={"input_axcodes": str}).set_index("scan")
    assert table.loc["analyze", "input_axcodes"] == "LAS"
    mirrored = np.asanyarray(nib.load(str(out / "analyze_tissue.nii.gz")).dataobj)
    assert mirrored.shape == expected.shape and (mirrored > 0).sum() > 0.8 * (expected > 0).sum()
