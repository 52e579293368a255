"""`segment` with a briefly trained baseline: phantoms, renamed/.nii/Analyze inputs, a corrupt file, real Test_Set
scans."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import BASELINE, check_segment_outputs, copy_workspace, invoke, said, segment_with_baseline
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.segment import collect_inputs, output_names, tissue_volumes

MODEL = BASELINE


@pytest.fixture(scope="module")
def trained(trained_baseline_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's briefly trained unet2d__dice_ce workspace (a test here rewrites its weights)."""
    return copy_workspace(trained_baseline_ws, tmp_path_factory.mktemp("segment") / "ws")


def check_outputs(inputs: dict[str, Path], out: Path, model: str = MODEL) -> pd.DataFrame:
    """Every output on its input's grid, labels in {0..3}, and the CSV's mL equal to voxel counts × voxel volume."""
    return check_segment_outputs(inputs, out, model)


def test_renamed_nii_and_analyze_inputs_keep_their_names_and_grids(trained, phantom_root, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    renamed = shutil.copy(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz",
                          inputs / "patient A.nii.gz")
    plain = inputs / "subject-2.nii"  # uncompressed, 4-D (X,Y,Z,1) as IBSR ships
    nib.save(nib.load(phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"), plain)
    analyze = phantom_root / "analyze" / "IBSR_07" / "images" / "analyze" / "IBSR_07_ana.hdr"
    out = tmp_path / "out"
    result = segment_with_baseline(trained, str(inputs), str(analyze), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert f"model: {MODEL}" in said(result) and "s per scan" in said(result)
    assert sorted(p.name for p in out.iterdir()) == [
        "IBSR_07_ana_qc.png", "IBSR_07_ana_tissue.nii.gz", "patient A_qc.png", "patient A_tissue.nii.gz",
        "segment.json", "subject-2_qc.png", "subject-2_tissue.nii.gz", "volumes.csv"]
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
    result = segment_with_baseline(trained, str(inputs), "--output", str(out))
    assert result.exit_code == 1
    assert "2 of 3 scans failed" in said(result)
    table = check_outputs({"good_tissue.nii.gz": Path(good)}, out).reset_index().set_index("scan")
    assert "truncated or corrupt" in table.loc["broken", "error"]
    assert "2-D" in table.loc["flat", "error"]
    assert sorted(p.name for p in out.iterdir()) == ["good_qc.png", "good_tissue.nii.gz", "segment.json",
                                                     "volumes.csv"]  # nothing half-written


def test_real_test_set_scans(trained, shared_ibsr18, tmp_path):
    scan = shared_ibsr18 / "Test_Set" / "IBSR_02" / "IBSR_02.nii.gz"
    out = tmp_path / "out"
    result = segment_with_baseline(trained, str(scan), "--output", str(out))
    assert result.exit_code == 0, result.output
    table = check_outputs({"IBSR_02_tissue.nii.gz": scan}, out)
    # trained on 64×32×64 phantoms at ~4×6×4 mm, the real 0.94×1.5×0.94 mm scan is flagged
    assert "spacing (0.938, 1.5, 0.938) mm is far from training's" in table.loc[str(scan), "warnings"]


def test_default_model_needs_a_leaderboard_and_inputs_must_exist(trained, phantom_root, tmp_path):
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    result = invoke(trained, "segment", str(scan), "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no leaderboard" in said(result) and "pass --model" in said(result)
    for missing in (tmp_path / "nope.nii.gz", tmp_path):
        refused = segment_with_baseline(trained, str(missing), "--output", str(tmp_path / "out"))
        assert refused.exit_code == 1
        assert "does not exist" in said(refused) or "no .nii, .nii.gz or .hdr/.img file" in said(refused)


def test_input_collection_and_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in ("a/T1.nii.gz", "b/T1.nii.gz", "a/x.img", "a/x.hdr", "a/notes.txt"):
        (tmp_path / path).write_bytes(b"")
    found = collect_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/T1.nii.gz", "a/x.hdr", "b/T1.nii.gz"]
    assert list(output_names(found).values()) == ["a__T1", "x", "b__T1"]


def test_tissue_volumes_by_hand():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, :2] = 1  # 2 CSF voxels
    labels[1, :, :] = 2  # 16 GM voxels
    labels[2, :2, :] = 3  # 8 WM voxels
    v = tissue_volumes(labels, (2.0, 1.0, 0.5))  # 1 mm³ voxels
    assert [v[k] for k in ("CSF_ml", "GM_ml", "WM_ml", "total_ml")] == pytest.approx([0.002, 0.016, 0.008, 0.026],
                                                                                    abs=1e-15)
    assert v["BPF"] == pytest.approx(24 / 26) and v["GM_fraction"] == pytest.approx(16 / 26)


# ---- outputs that never collide, and re-runs that redo only what changed ------------------------------------------

@pytest.mark.parametrize("files, names", [
    (["a/s.nii.gz", "b/s.nii.gz"], ["a__s", "b__s"]),
    (["s.nii", "s.nii.gz"], ["s_nii", "s_nii_gz"]),
    (["x/deep/s.nii.gz", "x/s.nii.gz", "y/s.hdr"], ["x__deep__s", "x__s", "y__s"]),
    (["p/s.hdr", "p/s.nii.gz", "q/t.nii"], ["s_hdr", "s_nii_gz", "t"]),
])
def test_output_names_are_unique_for_any_inputs(tmp_path, files, names):
    paths = []
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
        paths.append(tmp_path / name)
    assert [output_names(paths)[p] for p in paths] == names


def test_an_output_folder_inside_the_inputs_is_not_read_back_and_a_file_is_refused(trained, phantom_root, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz", inputs / "good.nii.gz")
    out = inputs / "tissue"
    for _ in range(2):
        result = segment_with_baseline(trained, str(inputs), "--output", str(out), "--no-qc")
        assert result.exit_code == 0, result.output
    assert pd.read_csv(out / "volumes.csv")["scan"].tolist() == ["good"]  # not good_tissue read back as input
    refused = segment_with_baseline(trained, str(inputs), "--output", str(inputs / "good.nii.gz"))
    assert refused.exit_code == 1 and "is a file; pass a folder" in said(refused)


def test_a_rerun_is_a_no_op_and_redoes_only_what_changed(trained, phantom_root, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    for case, folder in (("IBSR_08", "Test_Set"), ("IBSR_06", "Validation_Set")):
        shutil.copy(phantom_root / "misa" / folder / case / f"{case}.nii.gz", inputs / f"{case}.nii.gz")
    out = tmp_path / "out"
    assert segment_with_baseline(trained, str(inputs), "--output", str(out)).exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_tissue.nii.gz")}
    again = segment_with_baseline(trained, str(inputs), "--output", str(out))
    assert again.exit_code == 0 and "nothing redone" in said(again), again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_tissue.nii.gz")} == stamps
    shutil.copy(phantom_root / "misa" / "Validation_Set" / "IBSR_07" / "IBSR_07.nii.gz", inputs / "IBSR_06.nii.gz")
    changed = segment_with_baseline(trained, str(inputs), "--output", str(out))
    assert changed.exit_code == 0 and "1 scans already up to date" in said(changed), changed.output
    assert (out / "IBSR_08_tissue.nii.gz").stat().st_mtime_ns == stamps["IBSR_08_tissue.nii.gz"]
    assert (out / "IBSR_06_tissue.nii.gz").stat().st_mtime_ns != stamps["IBSR_06_tissue.nii.gz"]
    table = pd.read_csv(out / "volumes.csv")
    assert sorted(table["scan"]) == ["IBSR_06", "IBSR_08"] and table["error"].isna().all()
    best = trained.baselines / MODEL / "best.pt"
    best.touch()  # a retrained model: everything is redone
    redone = segment_with_baseline(trained, str(inputs), "--output", str(out))
    assert redone.exit_code == 0 and "already up to date" not in said(redone) and "nothing redone" not in said(redone)


# ---- orientation, QC pictures, soft volumes, TTA ---------------------------------------------------------------


def test_qc_pictures_and_the_contact_sheet(trained, phantom_root, tmp_path):
    from PIL import Image

    inputs = [phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz",
              phantom_root / "misa" / "Validation_Set" / "IBSR_06" / "IBSR_06.nii.gz"]
    out = tmp_path / "out"
    result = segment_with_baseline(trained, *map(str, inputs), "--output", str(out), "--qc-sheet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "volumes.csv").set_index("scan")
    for case in ("IBSR_08", "IBSR_06"):
        picture = out / f"{case}_qc.png"
        assert table.loc[case, "qc"] == str(picture)
        width, height = Image.open(picture).size
        assert width > 1.5 * height > 300
    sheet = Image.open(out / "qc_sheet.png")
    assert sheet.size[1] > 1.5 * Image.open(out / "IBSR_08_qc.png").size[1]  # one row per scan
    assert "QC contact sheet" in said(result)
    none = segment_with_baseline(trained, str(inputs[0]), "--output", str(tmp_path / "plain"), "--no-qc")
    assert none.exit_code == 0 and not list((tmp_path / "plain").glob("*.png"))


class ConstantModel(torch.nn.Module):
    """Logits equal everywhere: softmax (0.1, 0.2, 0.3, 0.4) at every voxel; counts its forward passes."""

    dims = 2

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(1, 4, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        return logits.view(1, 4, 1, 1).expand(x.shape[0], 4, *x.shape[2:]).clone()


def test_soft_volumes_are_probability_sums_times_the_voxel_volume():
    from baselines.infer import predict_array
    from ibsr_nnunet.segment import soft_volumes

    image = np.zeros((6, 20, 20), np.float32)
    image[1:5, 2:12, 3:9] = 1.0  # a 4×10×6 brain box of 240 voxels in 2400
    labels, soft = predict_array(ConstantModel(), image, (8, 8), overlap=0.5, amp=False, probabilities=True)
    sums = soft.sums
    np.testing.assert_allclose(sums, [2400 - 240 + 0.1 * 240, 0.2 * 240, 0.3 * 240, 0.4 * 240], rtol=1e-5)
    assert soft.confidence == pytest.approx(0.4)  # WM's 0.4 is the highest probability in every tissue voxel
    assert (labels[1:5, 2:12, 3:9] == 3).all() and labels.sum() == 3 * 240  # hard: WM in the box, counts exact
    volumes = soft_volumes(sums, (1.0, 2.0, 0.5))  # 1 mm³ voxels
    assert volumes == pytest.approx({"CSF_ml_soft": 0.048, "GM_ml_soft": 0.072, "WM_ml_soft": 0.096}, rel=1e-5)


@pytest.mark.parametrize("tta, passes", [(False, 1), (True, 4), ((1,), 2), ((), 1)])
def test_tta_mirrors_every_in_plane_axis_or_those_given(tta, passes):
    from baselines.infer import predict_array

    model = ConstantModel()
    image = np.ones((1, 8, 8), np.float32)
    predict_array(model, image, (8, 8), overlap=0.0, batch_size=1, amp=False, tta=tta)
    assert model.calls == passes


def test_soft_volumes_and_speed_options_reach_volumes_csv(trained, phantom_root, tmp_path):
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    out = tmp_path / "out"
    result = segment_with_baseline(trained, str(scan), "--output", str(out), "--soft-volumes", "--tta", "--step-size",
                                   "0.75", "--no-qc")
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "volumes.csv").iloc[0]
    assert (bool(row["tta"]), row["step_size"]) == (True, 0.75)
    image = nib.load(str(scan))
    image_ml = np.prod(image.shape[:3]) * np.prod(image.header.get_zooms()[:3]) / 1000
    soft = [row[f"{tissue}_ml_soft"] for tissue in ("CSF", "GM", "WM")]
    assert all(v > 0 for v in soft) and sum(soft) < image_ml  # probabilities: background takes the rest
    default = segment_with_baseline(trained, str(scan), "--output", str(tmp_path / "cpu"), "--no-qc")
    row = pd.read_csv(tmp_path / "cpu" / "volumes.csv").iloc[0]
    assert bool(row["tta"]) is False and np.isnan(row["CSF_ml_soft"]) and default.exit_code == 0
    bad = segment_with_baseline(trained, str(scan), "--output", str(tmp_path / "x"), "--step-size", "0")
    assert bad.exit_code == 1 and "--step-size 0.0 is outside (0, 1]" in said(bad)


def test_a_scan_far_from_the_training_spacing_is_resampled_unless_told_not_to(trained, phantom_root, tmp_path):
    """A phantom scan at the training spacing with each voxel split in two along axis 0, in the slices' plane (2x
    finer than training). Resampled
    by default: the network sees the stored scan again, and the map is its probabilities carried onto the fine grid
    before the argmax. --no-resample shows the network a brain twice as wide. The option is part of what a reused
    row must match."""
    from baselines.data import zscore
    from baselines.infer import Predictor, predict_probabilities
    from baselines.spacing import argmax_on

    predictor = Predictor(trained.baselines / BASELINE, device="cpu")
    image = np.asanyarray(nib.load(str(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz")).dataobj)
    image = image[..., 0]
    array = np.repeat(image, 2, axis=0)  # on the training spacing's grid, exactly `image` again
    scan = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([*np.array(predictor.orientation.spacing) / (2, 1, 1), 1])), str(scan))
    probs = predict_probabilities(predictor.model, np.moveaxis(zscore(image), 1, 0), predictor.window,
                                  amp=predictor.amp)
    expected, _, _ = argmax_on(np.moveaxis(probs, 1, 2), array.shape)
    out = tmp_path / "out"
    maps = {}
    for flag in ("--resample", "--no-resample"):
        result = segment_with_baseline(trained, str(scan), "--output", str(out), "--no-qc", flag)
        assert result.exit_code == 0, result.output
        row = pd.read_csv(out / "volumes.csv").iloc[0]
        assert bool(row["resample"]) is (flag == "--resample") and "reused" not in said(result)
        maps[flag] = np.asanyarray(nib.load(str(out / "fine_tissue.nii.gz")).dataobj)
    np.testing.assert_array_equal(maps["--resample"], expected)
    assert maps["--no-resample"].shape == array.shape and (maps["--no-resample"] != expected).mean() > 0.01


def test_one_segment_command_reads_the_conversion_manifest_once(trained_baseline_ws, phantom_root, tmp_path,
                                                                monkeypatch):
    """The model's provenance, reuse signature, orientation and preprocessing, and the training reference all come
    from the one manifest the command read."""
    import ibsr_nnunet.core.manifest as manifest_module

    parsed = []
    real = manifest_module.parse_manifest
    monkeypatch.setattr(manifest_module, "parse_manifest", lambda path, saved: parsed.append(path) or real(path, saved))
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    result = segment_with_baseline(trained_baseline_ws, str(scan), "--output", str(tmp_path / "out"), "--no-qc")
    assert result.exit_code == 0, result.output
    assert parsed == [manifest_module.manifest_path(trained_baseline_ws.raw_dataset)]
