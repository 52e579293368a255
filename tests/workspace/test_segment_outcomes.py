"""`segment` gives every scan its own outcome: QC pictures for any intensity range, one scan's failure recorded in
its row while the others go on, and one sentence for an output folder it cannot create, a full disk, or a default
model that is not a model of this workspace."""

import errno
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import copy_workspace, invoke, said
from ibsr_nnunet.core.atomic import write_text
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.locks import lock_path
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.volumes import read_volume
from ibsr_nnunet.evaluation.qc import Snapshot, qc_picture

MODEL = "unet2d__dice_ce"


@pytest.fixture(scope="module")
def trained(trained_baseline_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's converted phantom workspace with its briefly trained unet2d__dice_ce."""
    return copy_workspace(trained_baseline_ws, tmp_path_factory.mktemp("outcomes") / "ws")


@pytest.fixture
def scan(phantom_root) -> Path:
    return phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"


def invoke_segment(ws: Workspace, *args: str):
    return invoke(ws, "segment", *args, "--model", MODEL, "--device", "cpu")


def shifted(source: Path, target: Path, change) -> Path:
    """A copy of `source` with its voxels changed by `change(array)`, on the same grid."""
    image = nib.load(source)
    nib.save(nib.Nifti1Image(change(np.asarray(image.dataobj, dtype=np.float32)), image.affine), target)
    return target


@pytest.mark.parametrize("change", [
    lambda a: a - 1000.0,  # every voxel negative (CT-like or a mis-scaled export)
    lambda a: np.where(a != 0, -a, 0),  # negative brain, zero background
    lambda a: np.full_like(a, 7.0),  # constant
    lambda a: np.zeros_like(a),  # empty
], ids=["all-negative", "negative-brain", "constant", "empty"])
def test_qc_pictures_for_any_intensity_range(scan, tmp_path, change):
    image = change(read_volume(scan).array.astype(np.float32))
    labels = (np.arange(image.size).reshape(image.shape) % 4).astype(np.uint8)
    target = qc_picture(Snapshot("s", image, labels, (1.0, 1.0, 1.0), "title"), tmp_path / "s_qc.png")
    from PIL import Image

    assert Image.open(target).size[0] > 300


def test_a_folder_with_a_negative_scan_segments_every_scan(trained, scan, tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    for index in range(3):
        shutil.copy(scan, inputs / f"a{index}.nii.gz")
    shifted(scan, inputs / "b_negative.nii.gz", lambda a: a - 1000.0)
    for index in range(3):
        shutil.copy(scan, inputs / f"c{index}.nii.gz")
    out = tmp_path / "out"
    result = invoke_segment(trained, str(inputs), "--output", str(out))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "volumes.csv", keep_default_na=False).set_index("scan")
    assert len(table) == 7 and set(table["status"]) == {"ok"} and set(table["error"]) == {""}
    assert (out / "b_negative_qc.png").is_file() and float(table.loc["b_negative", "total_ml"]) > 0


def _fail_for(name: str, real):
    def failing(shot, target):
        if shot.name == name:
            raise ValueError("drawing went wrong")
        return real(shot, target)
    return failing


def _predict_fails_for(shape_marker: float, real_call):
    def failing(self, volume, probabilities=False):
        if float(np.asarray(volume.array).max()) == shape_marker:
            raise RuntimeError("the network broke")
        return real_call(self, volume, probabilities)
    return failing


def test_a_qc_or_prediction_failure_is_that_scans_row_and_the_others_go_on(trained, scan, tmp_path, monkeypatch):
    import baselines.infer
    from ibsr_nnunet.segment import qc as pictures

    inputs = tmp_path / "scans"
    inputs.mkdir()
    for name in ("a", "b_qc", "c", "d_predict", "e"):
        shutil.copy(scan, inputs / f"{name}.nii.gz")
    shifted(scan, inputs / "d_predict.nii.gz", lambda a: np.where(a != 0, 12345.0, 0))  # marks the scan to break
    monkeypatch.setattr(pictures, "qc_picture", _fail_for("b_qc", pictures.qc_picture))
    monkeypatch.setattr(baselines.infer.Predictor, "__call__",
                        _predict_fails_for(12345.0, baselines.infer.Predictor.__call__))
    out = tmp_path / "out"
    result = invoke_segment(trained, str(inputs), "--output", str(out))
    assert result.exit_code == 1
    assert "2 of 5 scans failed: b_qc.nii.gz, d_predict.nii.gz" in said(result)
    table = pd.read_csv(out / "volumes.csv", keep_default_na=False).set_index("scan")
    assert list(table.index) == ["a", "b_qc", "c", "d_predict", "e"]
    assert table["status"].to_dict() == {"a": "ok", "b_qc": "failed", "c": "ok", "d_predict": "failed", "e": "ok"}
    assert "QC picture" in table.loc["b_qc", "error"] and "drawing went wrong" in table.loc["b_qc", "error"]
    assert "prediction" in table.loc["d_predict", "error"] and "the network broke" in table.loc["d_predict", "error"]
    assert table.loc["b_qc", "output"] == "" and table.loc["b_qc", "CSF_ml"] == ""
    # a failed scan leaves nothing behind; the others are complete
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["segment.json", "volumes.csv"] + [f"{n}_{kind}" for n in "ace" for kind in ("qc.png", "tissue.nii.gz")])
    monkeypatch.undo()
    again = invoke_segment(trained, str(inputs), "--output", str(out))  # the failed ones are redone, the rest reused
    assert again.exit_code == 0, again.output
    assert "3 scans already up to date" in said(again)


def test_an_output_folder_that_cannot_be_created_is_one_sentence(trained, scan):
    result = invoke_segment(trained, str(scan), "--output", "/proc/ibsr-nnunet-out")
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot create the output folder /proc/ibsr-nnunet-out" in said(result)
    assert "Traceback" not in result.output


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MiB tmpfs (root only); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` until about `leave` bytes are free."""
    with open(disk / "filler", "wb") as handle:
        try:
            while shutil.disk_usage(disk).free > leave:
                handle.write(b"\0" * min(1 << 16, max(shutil.disk_usage(disk).free - leave, 4096)))
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


@pytest.mark.parametrize("inside", [True, False], ids=["lock-on-the-full-disk", "lock-elsewhere"])
def test_a_full_disk_in_segment_is_one_sentence(trained, scan, tiny_disk, inside):
    out = tiny_disk / "out" if inside else tiny_disk  # the lock file lies beside the output folder
    out.mkdir(exist_ok=True)
    fill(tiny_disk, 0)
    result = invoke_segment(trained, str(scan), "--output", str(out))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    written = lock_path(out) if inside else out  # the lock is the first file written
    assert f"no space left on {tiny_disk} while writing {written}" in said(result)
    assert sorted(p.name for p in out.iterdir()) == ([] if inside else ["filler"])  # nothing half-written


def test_a_full_disk_in_the_qc_picture_is_one_sentence(scan, tiny_disk):
    fill(tiny_disk, 0)
    image = read_volume(scan).array.astype(np.float32)
    target = tiny_disk / "s_qc.png"
    with pytest.raises(InputError, match=rf"^no space left on {tiny_disk} while writing {target}; .*\.$"):
        qc_picture(Snapshot("s", image, (image > 0).astype(np.uint8), (1.0, 1.0, 1.0), "t"), target)
    assert [p.name for p in tiny_disk.iterdir()] == ["filler"]


def _leaderboard(ws: Workspace, models: list[str]) -> None:
    from ibsr_nnunet.core.provenance import dataset_fingerprint

    rows = [{"rank": rank, "model": model, "mean_dice": 0.9 - rank / 10, "CSF_dice_mean": 0.5, "GM_dice_mean": 0.5,
             "WM_dice_mean": 0.5, "cases": 2, "dataset_fingerprint": dataset_fingerprint(ws)}
            for rank, model in enumerate(models, start=1)]
    write_text(ws.leaderboard, pd.DataFrame(rows).to_csv(index=False))


@pytest.mark.parametrize("ranked, chosen", [
    (["outside_model", MODEL], MODEL),  # rank 1 is an `evaluate --name` entry: predictions made elsewhere
    (["nnunet_ensemble", "resunet2d__dice", MODEL], MODEL),  # models not trained in this workspace
    ([MODEL, "outside_model"], MODEL),
], ids=["evaluated-name-first", "untrained-models-first", "model-first"])
def test_the_default_model_is_the_best_trained_model_of_the_workspace(trained, scan, tmp_path, ranked, chosen):
    ws = copy_workspace(trained, tmp_path / "ws")
    _leaderboard(ws, ranked)
    result = invoke(ws, "segment", str(scan), "--output", str(tmp_path / "out"), "--device", "cpu", "--no-qc")
    assert result.exit_code == 0, result.output
    assert f"model: {chosen} (the leaderboard best)" in said(result)


def test_no_trained_model_on_the_leaderboard_is_refused(trained, scan, tmp_path):
    ws = copy_workspace(trained, tmp_path / "ws")
    _leaderboard(ws, ["outside_model", "nnunet_2d"])
    result = invoke(ws, "segment", str(scan), "--output", str(tmp_path / "out"), "--device", "cpu")
    assert result.exit_code == 1
    assert "none of the models on" in said(result) and "pass --model" in said(result)
