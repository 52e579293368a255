"""`ensemble` on real nnunetv2: 2d and 3d_fullres folds 0 and 1 (one through nnU-Net's own CLI), three prediction
sets."""

import json
import os
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from helpers import (
    ORIENTATIONS,
    carried_back,
    check_segment_outputs,
    cli,
    console_script,
    reoriented_copy,
)
from ibsr_nnunet.core import checksums, provenance
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.convert import ConvertOptions, convert
from ibsr_nnunet.data.phantom import write_phantoms
from ibsr_nnunet.nnunet.environment import EXT_TRAINER_FOLDER
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

EPOCHS, ITERATIONS = 2, 3


EPOCHS, ITERATIONS = 2, 3


TRAINER = trainer_name(EPOCHS, ITERATIONS)


MODELS = ("nnunet_2d", "nnunet_3d_fullres", "nnunet_ensemble")


@pytest.fixture(scope="module")
def ensembled(tmp_path_factory) -> tuple[Workspace, subprocess.CompletedProcess]:
    # its own phantoms (seed 1), not the shared seed-0 workspace: the data these trained-model assertions were
    # established on; the folds trained here change the workspace anyway
    root = tmp_path_factory.mktemp("ensemble")
    write_phantoms(root / "source", subjects=8, layout="misa", size="small", seed=1)
    ws = Workspace.open(root / "ws")
    convert(root / "source", ws, ConvertOptions(jobs=2))
    assert cli(ws.root, "plan", "--jobs", "2").returncode == 0
    for config in ("2d", "3d_fullres"):
        done = cli(ws.root, "train", "--fold", "0", "--config", config, "--epochs", str(EPOCHS),
                   "--iterations-per-epoch", str(ITERATIONS), "--device", "cpu")
        assert done.returncode == 0, done.stdout + done.stderr
    done = cli(ws.root, "train", "--fold", "1", "--config", "2d", "--epochs", str(EPOCHS),
               "--iterations-per-epoch", str(ITERATIONS), "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    # our trainer subclass, found by nnU-Net's own CLI through nnUNet_extTrainer
    nnunet_cli = subprocess.run(
        [console_script("nnUNetv2_train"), str(ws.dataset_id), "3d_fullres", "1", "-tr", TRAINER, "--npz",
         "-device", "cpu"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, **ws.nnunet_env(), "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER),
             "nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "2"})
    assert nnunet_cli.returncode == 0, nnunet_cli.stdout[-2000:] + nnunet_cli.stderr[-2000:]
    result = cli(ws.root, "ensemble", "--device", "cpu", "--jobs", "2")
    return ws, result


@pytest.mark.integration
def test_nnunet_cli_trained_our_trainer(ensembled):
    ws, _ = ensembled
    fold = ws.results_dataset / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_1"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "checkpoint_latest.pth written in" in log  # our atomic save ran inside nnU-Net's own CLI
    # save_every = 1 under nnU-Net's own CLI too (its default, 50, would write none in 2 epochs): checkpoint_latest
    # after every epoch but the last, which writes checkpoint_final instead
    assert log.count("checkpoint_latest.pth written in") == EPOCHS - 1
    assert log.count("checkpoint_final.pth written in") == 1
    assert re.findall(r": Epoch (\d+)\s*$", log, re.MULTILINE) == [str(e) for e in range(EPOCHS)]


@pytest.mark.integration
def test_ensemble_writes_three_prediction_sets_with_input_geometry(ensembled):
    ws, result = ensembled
    assert result.returncode == 0, result.stdout + result.stderr
    assert "only folds 0, 1 of 5 are finished" in result.stdout
    images = sorted((ws.raw_dataset / "imagesTs").glob("*_0000.nii.gz"))
    cases = sorted(p.name.replace("_0000.nii.gz", "") for p in images)
    assert cases == ["IBSR_06", "IBSR_07", "IBSR_08"]  # 2 held out + 1 test
    for model in MODELS:
        folder = ws.predictions / model
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"{c}.nii.gz" for c in cases] +
                                                                  ["ibsr_provenance.json", "model.json"])
        assert provenance.recorded(folder) == provenance.dataset_fingerprint(ws)
        configurations = ("2d", "3d_fullres") if model == "nnunet_ensemble" else (model.removeprefix("nnunet_"),)
        weights = provenance.recorded_weights(folder)  # each fold's final checkpoint it was predicted with
        assert [(ws.root / w["path"]).resolve() for w in weights] == [
            (fold_folder(ws, c, f, trainer=TRAINER) / "checkpoint_final.pth").resolve()
            for c in configurations for f in (0, 1)]
        assert all(w["sha256"] == checksums.sha256(ws.root / w["path"]) for w in weights)
        for image in images:
            reference = nib.load(image)
            prediction = nib.load(folder / image.name.replace("_0000", ""))
            labels = np.asarray(prediction.dataobj)
            assert labels.shape == reference.shape
            np.testing.assert_allclose(prediction.affine, reference.affine, atol=1e-5)
            assert prediction.get_data_dtype() == np.uint8
            assert set(np.unique(labels)) <= {0, 1, 2, 3}
            assert (labels > 0).sum() > 0.02 * labels.size  # it segmented something, not an empty map
    assert not [p for p in ws.predictions.iterdir() if p.name.startswith(".")]  # no scratch left


@pytest.mark.integration
def test_postprocessing_is_applied(ensembled):
    ws, _ = ensembled
    for model in MODELS:
        info = json.loads((ws.predictions / model / "model.json").read_text())
        assert info["folds"] == [0, 1] and info["trainer"] == TRAINER
        kept = [int(step.split("(")[1].rstrip(")")) for step in info["postprocessing"]
                if step.startswith("remove_all_but_largest_component_from_segmentation(") and "," not in step]
        for path in (ws.predictions / model).glob("*.nii.gz"):
            labels = np.asarray(nib.load(path).dataobj)
            for label in kept:
                # nnU-Net's step keeps the largest component of that label, and every component tied with it in size
                # (acvl_utils keeps each id whose size equals the maximum): what is left is all of one size
                components, count = ndimage.label(labels == label, structure=np.ones((3, 3, 3)))
                sizes = set(np.bincount(components.ravel())[1:].tolist())
                assert len(sizes) <= 1, (model, path.name, label, count, sorted(sizes))


@pytest.mark.integration
def test_winner_and_reason_are_recorded(ensembled):
    ws, result = ensembled
    record = json.loads((ws.root / "best_configuration.json").read_text())
    assert set(record["crossval_dice"]) == set(MODELS)
    best = max(record["crossval_dice"].values())
    assert record["winner"] == next(m for m in MODELS if record["crossval_dice"][m] == best)
    assert record["reason"].startswith(f"{record['winner']} has the highest cross-validation")
    assert record["folds"] == [0, 1] and record["configurations"] == ["2d", "3d_fullres"]
    assert f"winner: {record['winner']}" in result.stdout
    info = json.loads((ws.results_dataset / "inference_information.json").read_text())  # nnU-Net's own record
    assert tuple(info["folds"]) == (0, 1)


@pytest.mark.integration
def test_segment_with_the_nnunet_ensemble_on_a_phantom_and_a_real_scan(ensembled, shared_ibsr18, tmp_path):
    ws, _ = ensembled
    phantom = ws.raw_dataset / "imagesTs" / "IBSR_08_0000.nii.gz"
    real = shared_ibsr18 / "Test_Set" / "IBSR_10" / "IBSR_10.nii.gz"
    out = tmp_path / "out"
    result = cli(ws.root, "segment", str(phantom), str(real), "--output", str(out), "--model", "nnunet_ensemble",
                 "--device", "cpu", "--tta")  # as `ensemble` predicted
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model: nnunet_ensemble" in result.stdout
    table = check_segment_outputs({"IBSR_08_0000_tissue.nii.gz": phantom, "IBSR_10_tissue.nii.gz": real}, out,
                                  model="nnunet_ensemble")
    assert "spacing (1.0, 1.5, 1.0) mm is far from training's" in table.loc[str(real), "warnings"]
    # the same model on the same image as `ensemble` predicted it: the same labels
    ours = np.asarray(nib.load(out / "IBSR_08_0000_tissue.nii.gz").dataobj)
    np.testing.assert_array_equal(
        ours, np.asarray(nib.load(ws.predictions / "nnunet_ensemble" / "IBSR_08.nii.gz").dataobj))


@pytest.mark.integration
def test_nnunet_maps_are_identical_in_every_orientation_of_a_real_scan(ensembled, shared_ibsr18, tmp_path):
    """A real scan stored in other axis orders and directions (affine kept) is reoriented to the training
    orientation before nnU-Net sees it, and its map carried back: identical on CPU to the original's."""
    ws, _ = ensembled
    real = shared_ibsr18 / "Test_Set" / "IBSR_10" / "IBSR_10.nii.gz"
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(real, inputs / "original.nii.gz")
    for i, (perm, flips) in enumerate(ORIENTATIONS):
        reoriented_copy(real, inputs / f"turned{i}.nii.gz", perm, flips)
    out = tmp_path / "out"
    result = cli(ws.root, "segment", str(inputs), "--output", str(out), "--model", "nnunet_2d", "--device", "cpu",
                 "--no-tta", "--no-qc")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = np.asanyarray(nib.load(str(out / "original_tissue.nii.gz")).dataobj)
    assert (expected > 0).sum() > 0
    for i, (perm, flips) in enumerate(ORIENTATIONS):
        turned = np.asanyarray(nib.load(str(out / f"turned{i}_tissue.nii.gz")).dataobj)
        np.testing.assert_array_equal(carried_back(turned, perm, flips), expected)
