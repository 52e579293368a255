"""`ensemble` on real nnunetv2: 2d and 3d_fullres folds 0 and 1 (one through nnU-Net's own CLI), three prediction
sets."""

import contextlib
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
    invoke,
    reoriented_copy,
    said,
)
from ibsr_nnunet.core import checksums, provenance
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.locks import Lock, lock_path
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.convert import ConvertOptions, convert
from ibsr_nnunet.data.phantom import write_phantoms
from ibsr_nnunet.nnunet.ensemble import select
from ibsr_nnunet.nnunet.environment import EXT_TRAINER_FOLDER
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name
from ibsr_nnunet.segment import choose_model

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


def test_ensemble_refuses_without_trained_folds(converted_copy):
    result = invoke(converted_copy, "ensemble", "--device", "cpu")
    assert result.exit_code == 1
    assert "no finished nnU-Net fold" in said(result) and "ibsr-nnunet train" in said(result)


def fake_fold(ws: Workspace, trainer: str, config: str, fold: int) -> None:
    folder = ws.results_dataset / f"{trainer}__nnUNetPlans__{config}" / f"fold_{fold}"
    (folder / "validation").mkdir(parents=True)
    for name in ("checkpoint_final.pth", "validation/summary.json", "validation/IBSR_01.npz"):
        (folder / name).write_bytes(b"")
    provenance.record(folder, provenance.dataset_fingerprint(ws))  # trained on this workspace's dataset


def test_select_uses_common_folds_and_says_why(converted_copy):
    ws = converted_copy  # select() reads the converted dataset (its provenance) first
    for fold in (0, 1, 2):
        fake_fold(ws, "IbsrTrainer", "2d", fold)
    for fold in (0, 1):
        fake_fold(ws, "IbsrTrainer", "3d_fullres", fold)
    fake_fold(ws, "IbsrTrainer_2ep_3it", "2d", 4)
    unfinished = ws.results_dataset / "IbsrTrainer__nnUNetPlans__3d_fullres" / "fold_3"
    unfinished.mkdir()
    (unfinished / "checkpoint_latest.pth").write_bytes(b"")
    selection = select(ws)
    assert (selection.trainer, selection.configurations, selection.folds) == (
        "IbsrTrainer", ("2d", "3d_fullres"), (0, 1))
    assert any("2d folds [2] are not finished in every configuration" in w for w in selection.warnings)
    assert any("only folds 0, 1 of 5" in w for w in selection.warnings)

    short = select(ws, "IbsrTrainer_2ep_3it")
    assert short.configurations == ("2d",) and short.folds == (4,)
    assert any("3d_fullres has no finished fold" in w for w in short.warnings)
    with pytest.raises(InputError, match="--trainer nope has no finished fold"):
        select(ws, "nope")
    shutil.rmtree(ws.results_dataset / "IbsrTrainer__nnUNetPlans__2d")
    fake_fold(ws, "IbsrTrainer", "2d", 4)
    with pytest.raises(InputError, match="none in common"):
        select(ws, "IbsrTrainer")


def test_ensemble_leaves_out_a_fold_being_trained(converted_copy):
    ws = converted_copy
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            fake_fold(ws, "IbsrTrainer", config, fold)
    busy = fold_folder(ws, "3d_fullres", 1, trainer="IbsrTrainer")
    with Lock(lock_path(busy), "3d_fullres fold 1", "ibsr-nnunet train --fold 1 --config 3d_fullres"):
        selection = select(ws)
        assert selection.folds == (0,)
        assert any(f"folds being trained left out: IbsrTrainer__nnUNetPlans__3d_fullres/fold_1 (is being trained "
                   f"right now by PID {os.getpid()} on " in w and "run `ibsr-nnunet ensemble` again when they finish"
                   in w for w in selection.warnings), selection.warnings
    assert select(ws).folds == (0, 1)  # its training ended: it is used again


def nnunet_model(ws: Workspace) -> str:
    """An nnunet_2d prediction set recorded as made from folds 0 and 1 of IbsrTrainer (fake, finished folds)."""
    for fold in (0, 1):
        fake_fold(ws, "IbsrTrainer", "2d", fold)
    folder = ws.predictions / "nnunet_2d"
    folder.mkdir(parents=True)
    postprocessing = ws.results_dataset / "crossval_results_folds_0_1" / "postprocessing.pkl"
    (folder / "model.json").write_text(json.dumps({"model": "nnunet_2d", "trainer": "IbsrTrainer",
                                                   "configurations": ["2d"], "folds": [0, 1],
                                                   "postprocessing_file": str(postprocessing)}))
    provenance.record(folder, provenance.dataset_fingerprint(ws))
    return "nnunet_2d"


@pytest.mark.parametrize("unfinish, why", [
    ("lock", r"is being trained right now by PID \d+ on .*`ibsr-nnunet train --fold 1 --config 2d`"),
    ("no final checkpoint", r"has no checkpoint_final\.pth \(its training has not finished\)"),
])
def test_segment_refuses_an_nnunet_model_whose_fold_is_not_finished(converted_copy, unfinish, why):
    ws = converted_copy
    model = nnunet_model(ws)
    assert choose_model(ws, model).info["folds"] == [0, 1]
    fold = fold_folder(ws, "2d", 1, trainer="IbsrTrainer")
    sentence = rf"model nnunet_2d uses 2d fold 1 \({fold}\), which {why}; let its `ibsr-nnunet train --fold 1 "
    with contextlib.ExitStack() as held:
        if unfinish == "lock":
            held.enter_context(Lock(lock_path(fold), "2d fold 1", "ibsr-nnunet train --fold 1 --config 2d"))
        else:
            (fold / "checkpoint_final.pth").unlink()
        with pytest.raises(InputError, match=sentence):
            choose_model(ws, model)


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


def test_ensemble_stages_only_images_in_another_orientation(phantom_root, tmp_path):
    from ibsr_nnunet.nnunet.ensemble import back_to_input_grid, in_training_orientation

    image = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    same = tmp_path / "IBSR_08_0000.nii.gz"
    shutil.copy(image, same)
    turned = reoriented_copy(image, tmp_path / "IBSR_09_0000.nii.gz", *ORIENTATIONS[1])
    staged = in_training_orientation([same, turned], ("R", "A", "S"), tmp_path / "oriented")
    assert staged[same] == same  # IBSR's own orientation: predicted as it is, unchanged
    copy = nib.load(str(staged[turned]))
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), np.asanyarray(nib.load(str(image)).dataobj)[..., 0])
    np.testing.assert_allclose(copy.affine, nib.load(str(image)).affine)
    labels = tmp_path / "IBSR_09.nii.gz"  # a "prediction" on the staged copy: the copy's own voxels
    nib.save(nib.Nifti1Image(np.asanyarray(copy.dataobj).astype(np.uint8) % 4, copy.affine), str(labels))
    back_to_input_grid(labels, turned, ("R", "A", "S"))
    restored = nib.load(str(labels))
    np.testing.assert_array_equal(restored.affine, nib.load(str(turned)).affine)
    np.testing.assert_array_equal(np.asanyarray(restored.dataobj), np.asanyarray(nib.load(str(turned)).dataobj) % 4)
