"""Baseline views, left-right flips, iteration budgets and ensembles of baselines, on the phantom workspace: real
training, real NIfTI files, the CLI in-process."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from baselines.data import PatchSampler, load_case, zscore
from baselines.infer import Predictor, predict_array
from baselines.options import CPU_ITERATIONS, TrainOptions
from baselines.run_folder import read_run_record, write_run_record
from baselines.train import _cosine_lr, train
from helpers import copy_workspace, invoke, said
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.volumes import read_volume

TINY = ["--width", "4", "--depth", "3", "--patch-size", "32", "--batch-size", "2", "--device", "cpu", "--threads", "1",
        "--iterations", "12", "--iterations-per-epoch", "6"]
VIEW_AXES = {"unet2d__dice_ce": ("thickest", 1), "unet2d_axial__dice_ce": ("axial", 2),
             "unet2d_sagittal__dice_ce": ("sagittal", 0)}
VIEWS = ",".join(VIEW_AXES)


@pytest.fixture(scope="module")
def views_ws(converted_ws, tmp_path_factory) -> Workspace:
    """The converted phantom (RAS, 64×32×64 at ≈ 4×6×4 mm: the thickest axis, 1, runs A-P) with unet2d trained on
    each view (12 iterations, CPU defaults otherwise: left-right flips on) and a tiny unet3d."""
    ws = copy_workspace(converted_ws, tmp_path_factory.mktemp("views") / "ws")
    for view in ("thickest", "axial", "sagittal"):
        result = invoke(ws, "baseline", "train", "--model", "unet2d", "--view", view, *TINY)
        assert result.exit_code == 0, result.output
    result = invoke(ws, "baseline", "train", "--model", "unet3d", "--width", "4", "--depth", "3", "--patch-size",
                    "16", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--iterations", "4")
    assert result.exit_code == 0, result.output
    return ws


# views -----------------------------------------------------------------------------------------------------------

def test_each_view_is_its_own_run_named_recorded_and_sliced_across_its_axis(views_ws):
    for name, (view, axis) in VIEW_AXES.items():
        folder = views_ws.baselines / name
        orientation = json.loads((folder / "orientation.json").read_text())
        assert (orientation["view"], orientation["slicing_axis"], orientation["axcodes"]) == (view, axis,
                                                                                               ["R", "A", "S"])
        assert json.loads((folder / "ibsr_provenance.json").read_text())["view"] == view
        assert read_run_record(folder).options["view"] == view


def test_predict_slices_the_way_the_run_was_trained(views_ws):
    result = invoke(views_ws, "baseline", "predict", "--model", "unet2d", "--view", "axial", "--loss", "dice_ce",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    case = views_ws.cases("heldout")[0]
    written = read_volume(views_ws.predictions / "unet2d_axial__dice_ce" / f"{case.id}.nii.gz").array
    predictor = Predictor(views_ws.baselines / "unet2d_axial__dice_ce", device="cpu")
    image = np.asarray(read_volume(case.image).array)
    # by hand: slices across axis 2 (S-I), whole-plane windows, back to the file's axis order
    by_hand = predict_array(predictor.model, np.ascontiguousarray(np.moveaxis(zscore(image), 2, 0)),
                            predictor.window, device=torch.device("cpu"), amp=predictor.amp)
    np.testing.assert_array_equal(written, np.moveaxis(by_hand, 0, 2))
    across_coronal = predict_array(predictor.model, np.ascontiguousarray(np.moveaxis(zscore(image), 1, 0)),
                                   predictor.window, device=torch.device("cpu"), amp=predictor.amp)
    assert (np.moveaxis(across_coronal, 0, 1) != written).any()  # the axis matters: this pins it


def test_a_view_is_found_in_the_axis_codes_not_the_array_order(tmp_path):
    data = np.zeros((10, 12, 14), np.int16)
    data[2:8, 2:10, 2:12] = 100
    affine = np.array([[0, -1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # axes run S, L, A
    path = tmp_path / "sla.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    found = {view: load_case("x", path, view=view) for view in ("axial", "sagittal", "coronal")}
    assert {view: case.axis for view, case in found.items()} == {"axial": 0, "sagittal": 1, "coronal": 2}
    assert found["axial"].image.shape == (10, 12, 14) and found["coronal"].image.shape == (14, 10, 12)
    # the L-R axis once the slicing axis is first: axis 1 stays 1 (axial), is the slicing axis (sagittal), moves to 2
    assert {view: case.left_right for view, case in found.items()} == {"axial": 1, "sagittal": 0, "coronal": 2}


def test_a_3d_model_takes_no_view(views_ws):
    result = invoke(views_ws, "baseline", "train", "--model", "unet3d", "--view", "axial", *TINY)
    assert result.exit_code == 1 and "--view axial is for the 2D models" in said(result)


# flips -----------------------------------------------------------------------------------------------------------

def test_flips_mirror_left_right_only_and_keep_labels_with_their_voxels(tmp_path):
    i, j, _ = np.meshgrid(np.arange(16), np.arange(16), np.arange(8), indexing="ij")
    image = (10 * (i + 1) + j + 1).astype(np.int16)  # rises along R (axis 0) by 10s and along A (axis 1) by 1s
    label = (image // 60).astype(np.int16)  # 0..2: a function of the intensity
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "l.nii.gz"))
    case = load_case("x", tmp_path / "i.nii.gz", tmp_path / "l.nii.gz")  # equal spacings: axis 0, R-L, is sliced
    lookup = {0.0: 0, **{round(float(v), 4): int(lab) for v, lab in zip(case.image.ravel(), case.label.ravel())}}

    def rises(patch: np.ndarray, axis: int) -> bool:
        inside = np.moveaxis(patch, axis, 0).reshape(patch.shape[axis], -1)
        column = inside[:, (inside != 0).sum(0).argmax()]  # the window may overhang the image: zeros there
        column = column[column != 0]
        return bool(column[-1] > column[0])

    sampler = PatchSampler([case], (16, 8, 8), csf_fraction=0.0, uniform_fraction=1.0, flip=True, seed=3)
    left_right = []
    for _ in range(40):
        patch, patch_label = sampler.sample()
        left_right.append(rises(patch, 0))
        assert rises(patch, 1)  # never mirrored along A
        # the labels moved with their voxels: each is still the label of its intensity
        np.testing.assert_array_equal(patch_label, np.vectorize(lambda v: lookup[round(float(v), 4)])(patch))
    assert 10 < sum(left_right) < 30  # about half mirrored left-right
    # slices across the L-R axis have no L-R axis left: A still rises in every one
    flat = PatchSampler([case], (8, 8), csf_fraction=0.0, uniform_fraction=1.0, flip=True, seed=3)
    assert all(rises(flat.sample()[0], 0) for _ in range(20))


def test_mirroring_at_test_time_is_the_mirroring_the_run_was_trained_for(views_ws):
    volume = read_volume(views_ws.cases("heldout")[0].image)
    coronal = Predictor(views_ws.baselines / "unet2d__dice_ce", device="cpu", tta=True)
    assert coronal._mirroring(volume, 1) == (0,)  # R-L is the slice's first axis
    assert Predictor(views_ws.baselines / "unet2d_sagittal__dice_ce", device="cpu", tta=True)._mirroring(
        volume, 0) == ()  # sagittal slices have no L-R axis: nothing to mirror
    assert Predictor(views_ws.baselines / "unet2d__dice_ce", device="cpu")._mirroring(volume, 1) is False
    result = invoke(views_ws, "baseline", "train", "--model", "unet2d", "--view", "coronal", "--no-flip", *TINY)
    assert result.exit_code == 0, result.output
    assert Predictor(views_ws.baselines / "unet2d_coronal__dice_ce", device="cpu", tta=True)._mirroring(
        volume, 1) is True  # trained without flips: every axis, as before


# iteration budgets -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given,budget", [
    ({"device": "cpu"}, (CPU_ITERATIONS[2], None, None)),
    ({"device": "cpu", "model": "unet3d"}, (CPU_ITERATIONS[3], None, None)),
    ({"device": "cpu", "epochs": 3}, (None, 3, None)),
    ({"device": "cpu", "minutes": 2.0}, (None, None, 2.0)),
    ({"device": "cpu", "iterations": 50, "minutes": 2.0}, (50, None, 2.0)),
])
def test_the_budget_given_is_the_whole_budget_and_the_cpu_default_counts_iterations(given, budget):
    options = TrainOptions.for_device(**given)
    assert (options.iterations, options.epochs, options.minutes) == budget


def test_an_iteration_budget_cuts_the_last_epoch_and_trains_the_same_model_twice(views_ws, tmp_path):
    files = views_ws.cases("train")
    options = TrainOptions(model="unet2d", width=4, depth=3, patch_size=32, batch_size=2, val_batches=1,
                           iterations=14, epochs=None, iterations_per_epoch=6, schedule="cosine", warmup_iterations=2,
                           device="cpu", threads=1, flip=True, seed=5)
    counted = []
    first = train(tmp_path / "a", files, options, on_iteration=lambda: counted.append(1))
    assert len(counted) == 14 and first.epochs_done == 3 and first.status == "finished"  # 6 + 6 + 2
    second = train(tmp_path / "b", files, options)
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and second.epochs_done == 3
    assert _cosine_lr(options, 13, 0.0) < 0.05 * options.lr  # the schedule ends with the iteration budget


# ensembles of baselines ------------------------------------------------------------------------------------------

def test_ensembles_are_predicted_ranked_and_segment_like_their_prediction_set(views_ws, tmp_path):
    mean = invoke(views_ws, "baseline", "ensemble", "--members", f"{VIEWS},unet3d__dice_ce", "--name",
                  "baseline_ensemble_views_3d", "--device", "cpu")
    assert mean.exit_code == 0, mean.output
    vote = invoke(views_ws, "baseline", "ensemble", "--members", VIEWS, "--vote", "majority", "--device", "cpu")
    assert vote.exit_code == 0, vote.output
    for name in ("baseline_ensemble_views_3d", "baseline_ensemble_vote"):
        assert sorted(p.name for p in (views_ws.predictions / name).iterdir()) == [
            "IBSR_06.nii.gz", "IBSR_07.nii.gz", "IBSR_08.nii.gz", "ibsr_provenance.json"]
    definition = json.loads((views_ws.baselines / "baseline_ensemble_vote" / "ensemble.json").read_text())
    assert definition == {"format": 1, "members": list(VIEW_AXES), "vote": "majority"}
    recorded = json.loads((views_ws.predictions / "baseline_ensemble_vote" / "ibsr_provenance.json").read_text())
    assert {w["path"] for w in recorded["weights"]} == {"baselines/baseline_ensemble_vote/ensemble.json",
                                                        *(f"baselines/{m}/best.pt" for m in VIEW_AXES)}

    # the fused labels are the majority of the members' labels on each voxel (ties to the highest mean probability)
    case = views_ws.cases("heldout")[0]
    volume = read_volume(case.image)
    probs = [Predictor(views_ws.baselines / m, device="cpu").probabilities(volume) for m in VIEW_AXES]
    votes = np.stack([p.argmax(0) for p in probs])
    fused = read_volume(views_ws.predictions / "baseline_ensemble_vote" / f"{case.id}.nii.gz").array
    agreed = (votes[0] == votes[1]) | (votes[0] == votes[2])
    np.testing.assert_array_equal(fused[agreed], votes[0][agreed])

    board = invoke(views_ws, "leaderboard")
    assert board.exit_code == 0, board.output
    ranked = set(__import__("pandas").read_csv(views_ws.leaderboard)["model"])
    assert {"baseline_ensemble_views_3d", "baseline_ensemble_vote"} <= ranked

    out = tmp_path / "seg"
    seg = invoke(views_ws, "segment", str(case.image), "--model", "baseline_ensemble_views_3d", "--device", "cpu",
                 "--no-qc", "--output", str(out))
    assert seg.exit_code == 0, seg.output
    [written] = out.glob("*_tissue.nii.gz")
    predicted = read_volume(views_ws.predictions / "baseline_ensemble_views_3d" / f"{case.id}.nii.gz").array
    np.testing.assert_array_equal(read_volume(written).array, predicted)

    # a bundle carries the definition and every member: segment from it alone gives the same labels
    bundle = tmp_path / "ensemble.zip"
    exported = invoke(views_ws, "export", "baseline_ensemble_views_3d", "--output", str(bundle))
    assert exported.exit_code == 0, exported.output
    elsewhere = tmp_path / "bundled"
    seg = invoke(None, "segment", str(case.image), "--model", str(bundle), "--device", "cpu", "--no-qc", "--output",
                 str(elsewhere), env={"IBSR_NNUNET_BUNDLES": str(tmp_path / "cache")})
    assert seg.exit_code == 0, seg.output
    [written] = elsewhere.glob("*_tissue.nii.gz")
    np.testing.assert_array_equal(read_volume(written).array, predicted)


def test_a_member_retrained_makes_the_ensemble_stale_on_the_leaderboard(views_ws, tmp_path):
    ws = copy_workspace(views_ws, tmp_path / "ws")
    assert invoke(ws, "baseline", "ensemble", "--members", VIEWS, "--device", "cpu").exit_code == 0
    assert invoke(ws, "leaderboard").exit_code == 0
    # one member trained again from scratch: its best.pt is rewritten, so the ensemble's predictions are another
    # model's (even were the bytes the same, the file is a new one)
    shutil.rmtree(ws.baselines / "unet2d_axial__dice_ce")
    again = invoke(ws, "baseline", "train", "--model", "unet2d", "--view", "axial", *TINY)
    assert again.exit_code == 0, again.output
    board = invoke(ws, "leaderboard")  # every set of this copy is now stale: nothing left to rank
    assert board.exit_code == 1 and "baseline_ensemble: its predictions were made with other weights " \
        "(baselines/unet2d_axial__dice_ce/best.pt changed" in said(board)
    assert "run `ibsr-nnunet baseline ensemble --name baseline_ensemble --members " \
        "unet2d__dice_ce,unet2d_axial__dice_ce,unet2d_sagittal__dice_ce --vote mean` to rank it" in said(board)


@pytest.mark.parametrize("members,message", [
    ("unet2d__dice_ce,unet2d__focal", "--members unet2d__focal: model unet2d__focal is not trained in this workspace"),
    ("unet2d__dice_ce", "an ensemble needs at least 2"),
    ("unet2d__dice_ce,nnunet_2d", "--members 'nnunet_2d' is not MODEL__LOSS"),
])
def test_members_must_be_finished_runs_of_this_workspace(views_ws, members, message):
    result = invoke(views_ws, "baseline", "ensemble", "--members", members, "--name", "baseline_ensemble_refused",
                    "--device", "cpu")
    assert result.exit_code == 1 and message in said(result), result.output
    assert not (views_ws.baselines / "baseline_ensemble_refused").exists()
    assert not (views_ws.predictions / "baseline_ensemble_refused").exists()


def test_an_unfinished_member_is_refused_in_one_sentence(views_ws):
    folder = views_ws.baselines / "unet2d_sagittal__dice_ce"
    record = read_run_record(folder)
    write_run_record(folder, record.__class__(**{**record.__dict__, "finished": False}))
    try:
        result = invoke(views_ws, "baseline", "ensemble", "--members", VIEWS, "--name", "baseline_ensemble_x",
                        "--device", "cpu")
    finally:
        write_run_record(folder, record)
    assert result.exit_code == 1 and "unet2d_sagittal__dice_ce (" in said(result)
    assert "has not finished training" in said(result)
    assert "baseline train --model unet2d --view sagittal --loss dice_ce" in said(result)
    assert not (views_ws.predictions / "baseline_ensemble_x").exists()


def test_an_ensemble_name_must_say_it_is_one(views_ws):
    result = invoke(views_ws, "baseline", "ensemble", "--members", VIEWS, "--name", "views", "--device", "cpu")
    assert result.exit_code == 1 and "--name 'views' is not baseline_ensemble or baseline_ensemble_SUFFIX" in said(
        result)
