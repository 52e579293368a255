"""`segment` with a briefly trained baseline: phantoms, renamed/.nii/Analyze inputs, a corrupt file, real Test_Set scans."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ibsr_nnunet.segment import collect_inputs, output_names, tissue_volumes
from ibsr_nnunet.core.workspace import Workspace

from helpers import check_segment_outputs, copy_workspace, invoke, said

MODEL = "unet2d__dice_ce"


@pytest.fixture(scope="module")
def trained(converted_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's converted seed-0 phantom workspace with a briefly trained unet2d__dice_ce."""
    ws = copy_workspace(converted_ws, tmp_path_factory.mktemp("segment") / "ws")
    result = invoke(ws, "baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", "2",
                    "--iterations-per-epoch", "10", "--width", "4", "--patch-size", "32", "--batch-size", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    return ws


def run(ws: Workspace, *args: str):
    return invoke(ws, "segment", *args, "--model", MODEL, "--device", "cpu")


def check_outputs(inputs: dict[str, Path], out: Path, model: str = MODEL) -> pd.DataFrame:
    """Every output on its input's grid, labels in {0..3}, and the CSV's mL equal to voxel counts × voxel volume."""
    return check_segment_outputs(inputs, out, model)


def test_renamed_nii_and_analyze_inputs_keep_their_names_and_grids(trained, phantom_root, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    renamed = shutil.copy(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz", inputs / "patient A.nii.gz")
    plain = inputs / "subject-2.nii"  # uncompressed, 4-D (X,Y,Z,1) as IBSR ships
    nib.save(nib.load(phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"), plain)
    analyze = phantom_root / "analyze" / "IBSR_07" / "images" / "analyze" / "IBSR_07_ana.hdr"
    out = tmp_path / "out"
    result = run(trained, str(inputs), str(analyze), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert f"model: {MODEL}" in said(result) and "s per scan" in said(result)
    assert sorted(p.name for p in out.iterdir()) == [
        "IBSR_07_ana_tissue.nii.gz", "patient A_tissue.nii.gz", "subject-2_tissue.nii.gz", "volumes.csv"]
    check_outputs({"patient A_tissue.nii.gz": Path(renamed), "subject-2_tissue.nii.gz": plain,
                   "IBSR_07_ana_tissue.nii.gz": analyze}, out)


def test_a_corrupt_file_is_reported_and_the_others_finish(trained, phantom_root, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    good = shutil.copy(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz", inputs / "good.nii.gz")
    data = (phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz").read_bytes()
    (inputs / "broken.nii.gz").write_bytes(data[: len(data) // 2])
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.int16), np.eye(4)), inputs / "flat.nii.gz")  # 2-D
    out = tmp_path / "out"
    result = run(trained, str(inputs), "--output", str(out))
    assert result.exit_code == 1
    assert "2 of 3 scans failed" in said(result)
    table = check_outputs({"good_tissue.nii.gz": Path(good)}, out).reset_index().set_index("scan")
    assert "truncated or corrupt" in table.loc["broken", "error"]
    assert "2-D" in table.loc["flat", "error"]
    assert sorted(p.name for p in out.iterdir()) == ["good_tissue.nii.gz", "volumes.csv"]  # nothing half-written


def test_real_test_set_scans(trained, shared_ibsr18, tmp_path):
    scan = shared_ibsr18 / "Test_Set" / "IBSR_02" / "IBSR_02.nii.gz"
    out = tmp_path / "out"
    result = run(trained, str(scan), "--output", str(out))
    assert result.exit_code == 0, result.output
    table = check_outputs({"IBSR_02_tissue.nii.gz": scan}, out)
    # trained on 64×32×64 phantoms at ~4×6×4 mm, the real 0.94×1.5×0.94 mm scan is flagged
    assert "spacing (0.938, 1.5, 0.938) mm is far from training's" in table.loc[str(scan), "warnings"]


def test_default_model_needs_a_leaderboard_and_inputs_must_exist(trained, phantom_root, tmp_path):
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    result = invoke(trained, "segment", str(scan), "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no leaderboard" in said(result) and "pass --model" in said(result)
    for missing in (tmp_path / "nope.nii.gz", tmp_path):
        refused = run(trained, str(missing), "--output", str(tmp_path / "out"))
        assert refused.exit_code == 1
        assert "does not exist" in said(refused) or "no .nii, .nii.gz or .hdr/.img file" in said(refused)


def test_input_collection_and_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in ("a/T1.nii.gz", "b/T1.nii.gz", "a/x.img", "a/x.hdr", "a/notes.txt"):
        (tmp_path / path).write_bytes(b"")
    found = collect_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/T1.nii.gz", "a/x.hdr", "b/T1.nii.gz"]
    assert list(output_names(found).values()) == ["a_T1_tissue.nii.gz", "x_tissue.nii.gz", "b_T1_tissue.nii.gz"]


def test_tissue_volumes_by_hand():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, :2] = 1  # 2 CSF voxels
    labels[1, :, :] = 2  # 16 GM voxels
    labels[2, :2, :] = 3  # 8 WM voxels
    v = tissue_volumes(labels, (2.0, 1.0, 0.5))  # 1 mm³ voxels
    assert [v[k] for k in ("CSF_ml", "GM_ml", "WM_ml", "total_ml")] == pytest.approx([0.002, 0.016, 0.008, 0.026], abs=1e-15)
    assert v["BPF"] == pytest.approx(24 / 26) and v["GM_fraction"] == pytest.approx(16 / 26)
