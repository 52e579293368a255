"""Baseline data, training, resume after SIGUSR1, inference and CLI on a small phantom workspace."""

import csv
import json
import os
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from baselines.data import Augment, PatchSampler, crop, load_case, slicing_axis, zscore
from baselines.infer import gaussian_weights, predict_array, predict_files, window_starts
from baselines.models import MODELS, build_model
from baselines.options import TrainOptions, device_defaults
from baselines.run_folder import run_dir
from baselines.threads import ThreadTuner
from baselines.train import GRADIENT_CLIP, apply_gradients, split_validation, train
from helpers import CLI, copy_workspace, interrupt_when, invoke, said
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE, EXIT_STALLED
from ibsr_nnunet.core.runlog import RUNS_FILE, read_runs
from ibsr_nnunet.core.workspace import Workspace

TINY = ["--width", "4", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def baseline_ws(converted_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's converted phantom workspace (seed 0): 5 train, 2 held-out, 1 test case of 64×32×64
    voxels (spacing ≈ 4×6×4 mm); this module trains and predicts in it."""
    return copy_workspace(converted_ws, tmp_path_factory.mktemp("baselines") / "ws")


def tiny_options(**changes) -> TrainOptions:
    model = changes.get("model", "unet2d")
    settings = dict(model=model, width=8 if model != "unet3d" else 4, depth=3, dropout=0.0,
                    patch_size=32 if model != "unet3d" else 16, batch_size=4, epochs=3, iterations_per_epoch=8,
                    val_batches=2, augment=False, lr=3e-3, device="cpu", seed=0)
    return TrainOptions(**{**settings, **changes})


@pytest.fixture(scope="module")
def trained(baseline_ws) -> dict:
    """One short run of every model with dice_ce: {model: TrainOutcome}."""
    files = baseline_ws.cases("train")
    return {m: train(run_dir(baseline_ws, m, "dice_ce"), files, tiny_options(model=m)) for m in MODELS}


# data

def test_zscore_over_brain_voxels_keeps_background_zero():
    image = np.zeros((4, 4, 4), np.int16)
    image[1:3, 1:3, 1:3] = [[[10, 20], [30, 40]], [[50, 60], [70, 80]]]
    out = zscore(image)
    brain = out[1:3, 1:3, 1:3]
    assert out.dtype == np.float32 and np.count_nonzero(out) == 8
    assert brain.mean() == pytest.approx(0.0, abs=1e-6) and brain.std() == pytest.approx(1.0, abs=1e-5)
    assert out[1, 1, 1] == pytest.approx((10 - 45) / np.std(np.arange(10, 90, 10)), abs=1e-5)


def test_slicing_axis_is_the_thickest_axis():
    assert slicing_axis((0.9375, 1.5, 0.9375)) == 1
    assert slicing_axis((1.0, 1.0, 3.0)) == 2
    assert slicing_axis((1.0, 1.0, 1.0)) == 0


def test_crop_pads_with_zeros_outside_the_array():
    array = np.arange(1, 10).reshape(3, 3)
    assert crop(array, (-1, 1), (3, 3)).tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    assert crop(array, (5, 5), (2, 2)).tolist() == [[0, 0], [0, 0]]


def test_case_puts_the_slicing_axis_first(baseline_ws):
    case_id, image, label = baseline_ws.cases("train")[0]
    case = load_case(case_id, image, label)
    assert case.axis == 1 and case.image.shape == case.label.shape == (32, 64, 64)
    assert set(np.unique(case.label)) <= {0, 1, 2, 3} and case.label.dtype == np.uint8


def test_sampler_is_deterministic_and_over_represents_csf(baseline_ws):
    cases = [load_case(c, i, l) for c, i, l in baseline_ws.cases("train")[:2]]
    first, second = (PatchSampler(cases, (16, 16), augment=Augment(), seed=3).batch(6) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].shape == (6, 1, 16, 16) and first[1].shape == (6, 16, 16)

    def csf_share(fraction: float) -> float:
        sampler = PatchSampler(cases, (4, 4), csf_fraction=fraction, uniform_fraction=0.0, seed=0)
        return np.mean([(sampler.sample()[1] == 1).mean() for _ in range(300)])  # share of CSF voxels
    assert csf_share(0.9) > 2 * csf_share(0.0)
    volume = PatchSampler(cases, (8, 16, 16), seed=0).batch(2)
    assert volume[0].shape == (2, 1, 8, 16, 16)


def test_augmentation_keeps_labels_and_changes_the_patch():
    rng = np.random.default_rng(0)
    image = torch.randn(4, 1, 24, 24)
    label = torch.randint(0, 4, (4, 24, 24))
    out_image, out_label = Augment(p_spatial=1.0, rotate=30)(image.clone(), label.clone(), rng)
    assert out_image.shape == image.shape and set(out_label.unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(out_label, label)
    unchanged = Augment(flip=0.0, rotate=0.0, scale=0.0, shear=0.0, intensity=0.0)(image.clone(), label.clone(), rng)
    assert torch.allclose(unchanged[0], image) and torch.equal(unchanged[1], label)


def test_device_defaults():
    cpu = device_defaults("cpu")
    assert cpu["width"] == 16 and cpu["schedule"] == "cosine" and cpu["augment"] is False and cpu["lr"] == 3e-3
    assert device_defaults("cpu", "adadelta")["lr"] == 1.0 and device_defaults("cpu", "sgd")["lr"] == 0.01
    assert device_defaults("cpu", model="unet3d")["patch_size"] == 64


def test_validation_split_comes_from_the_given_ids_only():
    ids = ["IBSR_01", "IBSR_02", "IBSR_03", "IBSR_04", "IBSR_05"]
    train_ids, val_ids = split_validation(ids, 0, seed=0)
    assert len(val_ids) == 1 and sorted(train_ids + val_ids) == ids
    assert split_validation(ids, 0, seed=0) == (train_ids, val_ids)
    with pytest.raises(InputError, match="at least 2"):
        split_validation(["IBSR_01"], 0, 0)


def test_thread_tuner_keeps_the_faster_count_and_retries():
    before = torch.get_num_threads()
    slow = {1: 0.0, 2: 0.02}  # pretend two threads are slower, as on busy shared cores
    used = []

    def work():
        used.append(torch.get_num_threads())
        time.sleep(slow[used[-1]])
        return used[-1]
    try:
        tuner = ThreadTuner((2, 1), every=4)
        assert [tuner(work) for _ in range(6)] == [1, 2, 1, 1, 1, 2]  # trial 1, 2; then 1; trial again at call 4
        assert tuner.best == 1
        slow.update({1: 0.02, 2: 0.0})
        assert [tuner(work) for _ in range(4)] == [1, 1, 1, 2]  # calls 6, 7 keep 1; the trial at 8, 9 finds 2
        assert tuner.best == 2 and tuner(work) == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="thread counts must be >= 1"):
        ThreadTuner((0,))


# training

@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_and_its_loss_falls(trained, baseline_ws, model):
    result = trained[model]
    assert result.status == "finished" and result.epochs_done == 3
    assert result.log[-1]["train_loss"] < result.log[0]["train_loss"]
    folder = run_dir(baseline_ws, model, "dice_ce")
    record = json.loads((folder / "run.json").read_text())
    assert record["finished"] is True and record["epochs_done"] == 3 and record["train_seconds"] > 0
    assert record["model"] == model and record["loss"] == "dice_ce" and record["options"]["iterations_per_epoch"] == 8
    assert not set(record["val_cases"]) & set(json.loads(baseline_ws.manifest.read_text())["split"]["heldout"])
    assert len(record["val_cases"]) == 1 and len(record["train_cases"]) == 4
    with open(folder / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert (folder / "best.pt").is_file()


def test_finished_run_returns_at_once_and_a_changed_run_is_refused(trained, baseline_ws):
    files = baseline_ws.cases("train")
    again = train(run_dir(baseline_ws, "unet2d", "dice_ce"), files, tiny_options())
    assert again.status == "already finished" and again.epochs_done == 3
    with pytest.raises(InputError, match="width=8"):
        train(run_dir(baseline_ws, "unet2d", "dice_ce"), files, tiny_options(width=6))


def test_optimizers_and_plateau_schedule_run(baseline_ws, tmp_path):
    files = baseline_ws.cases("train")
    for optimizer, lr in (("sgd", 1e-2), ("adadelta", 1.0)):
        result = train(tmp_path / optimizer, files, tiny_options(optimizer=optimizer, lr=lr, epochs=2,
                                                                 iterations_per_epoch=3, plateau_patience=0))
        assert result.status == "finished" and len(result.log) == 2
        assert result.log[0]["lr"] == f"{lr:.3g}"


@pytest.mark.parametrize("changes,message", [
    ({"model": "vnet"}, "unknown model 'vnet'"), ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"optimizer": "lion"}, "unknown optimizer"), ({"epochs": None, "minutes": None}, "no budget"),
    ({"batch_size": 0}, "batch_size must be positive"),
])
def test_bad_options_are_refused(changes, message):
    with pytest.raises(InputError, match=message):
        tiny_options(**changes)


def test_sigusr1_saves_exits_75_and_the_next_call_resumes(baseline_ws):
    args = [*CLI, "--workspace", str(baseline_ws.root), "baseline", "train", "--model", "unet2d", "--loss", "ce",
            "--epochs", "4", "--iterations-per-epoch", "15", *TINY]
    checkpoint = run_dir(baseline_ws, "unet2d", "ce") / "checkpoint.pt"
    returncode, output = interrupt_when(args, checkpoint, timeout=120, wait=60, env={"COLUMNS": "200"})
    assert checkpoint.exists(), "training never wrote its checkpoint"
    assert returncode == EXIT_REQUEUE, output
    saved = torch.load(checkpoint, weights_only=False)
    assert 1 <= saved["epoch"] < 4 and not saved["finished"]
    first_seconds = saved["train_seconds"]

    again = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming {checkpoint.parent} at epoch {saved['epoch']}" in again.stdout
    record = json.loads((checkpoint.parent / "run.json").read_text())
    assert record["finished"] and record["epochs_done"] == 4 and record["train_seconds"] > first_seconds
    with open(checkpoint.parent / "log.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]

    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0 and "already finished" in done.stdout

    # our own history: the USR1 run and the run that finished (the no-op call above records nothing)
    first, second = read_runs(checkpoint.parent)
    assert (first.reason, first.epoch_start, first.epoch_end, first.end["exit_code"]) == (
        "usr1", 0, saved["epoch"], EXIT_REQUEUE)
    assert (second.reason, second.epoch_start, second.epoch_end) == ("finished", saved["epoch"], 4)
    assert second.start["device"] == "cpu" and second.start["command"] == "baseline train"


def test_two_usr1_runs_without_a_finished_epoch_stall_with_76(baseline_ws):
    """USR1 as soon as the run has recorded its start: twice in a row no epoch ends, so the second run exits 76."""
    args = [*CLI, "--workspace", str(baseline_ws.root), "baseline", "train", "--model", "unet2d", "--loss", "dice",
            "--epochs", "2", "--iterations-per-epoch", "400", *TINY]
    runs = run_dir(baseline_ws, "unet2d", "dice") / RUNS_FILE
    codes = []
    for count in (1, 2):
        code, output = interrupt_when(args,
                                      lambda: runs.is_file() and runs.read_text().count('"event":"start"') == count,
                                      timeout=240, wait=60, env={"COLUMNS": "200"})
        codes.append(code)
    assert codes == [EXIT_REQUEUE, EXIT_STALLED], output
    assert "longer --time or a smaller --signal-grace" in " ".join(output.split())
    assert [(r.reason, r.epoch_start, r.epoch_end) for r in read_runs(runs.parent)] == [("usr1", 0, 0)] * 2


# inference

def test_window_starts_and_gaussian_weights():
    assert window_starts(10, 10, 0.5) == [0]
    assert window_starts(256, 128, 0.5) == [0, 64, 128]
    assert window_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]
    weights = gaussian_weights((5, 7))
    assert weights.shape == (5, 7) and weights[2, 3] == 1.0 and weights.min() > 0
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.flip(1))


@pytest.mark.parametrize("model", ["unet2d", "unet3d"])
def test_predict_array_handles_images_smaller_and_larger_than_the_window(model):
    net = build_model(model, width=4, depth=3, dropout=0.0)
    window = (16, 16) if model == "unet2d" else (16, 16, 16)
    image = np.random.default_rng(0).standard_normal((5, 37, 9)).astype(np.float32)
    labels = predict_array(net, image, window, overlap=0.5, batch_size=3)
    assert labels.shape == (5, 37, 9) and labels.dtype == np.uint8 and labels.max() <= 3
    image[:, :4], image[:, 30:] = 0, 0  # background around the brain is never labelled
    labels = predict_array(net, image, window)
    assert not labels[:, :4].any() and not labels[:, 30:].any()
    assert not predict_array(net, np.zeros((4, 8, 8), np.float32), window).any()


@pytest.mark.parametrize("model", MODELS)
def test_predictions_keep_the_input_geometry(trained, baseline_ws, model, tmp_path):
    cases = [(c, i) for role in ("heldout", "test") for c, i, _ in baseline_ws.cases(role)]
    written = predict_files(run_dir(baseline_ws, model, "dice_ce"), cases, tmp_path, device="cpu")
    assert [p.name for p in written] == [f"{c}.nii.gz" for c, _ in cases]
    for (case, image), path in zip(cases, written):
        source, prediction = nib.load(str(image)), nib.load(str(path))
        assert prediction.shape == source.shape == (64, 32, 64)
        assert np.array_equal(prediction.affine, source.affine)
        assert prediction.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 3}


# command line

def test_cli_trains_predicts_and_refuses(baseline_ws):
    before = invoke(baseline_ws, "baseline", "predict", "--model", "denseunet2d", "--loss", "focal")
    assert before.exit_code == 1 and "is not trained in this workspace" in before.output
    assert "baseline train --model denseunet2d --loss focal" in before.output
    trained = invoke(baseline_ws, "baseline", "train", "--model", "resunet2d", "--loss", "focal_tversky",
                     "--epochs", "2", "--iterations-per-epoch", "3", "--optimizer", "sgd",
                     "--schedule", "plateau", "--augment", "--threads", "1", *TINY)
    assert trained.exit_code == 0, trained.output
    assert "finished after 2 epochs (from scratch)" in trained.output
    options = json.loads((run_dir(baseline_ws, "resunet2d", "focal_tversky") / "run.json").read_text())["options"]
    assert options["optimizer"] == "sgd" and options["lr"] == 0.01 and options["schedule"] == "plateau"
    assert options["augment"] is True and options["width"] == 4 and options["batch_size"] == 2
    assert options["threads"] == 1  # fixed: the timing tuner would pick 1 or 2 by the cores' load
    predicted = invoke(baseline_ws, "baseline", "predict", "--model", "resunet2d", "--loss", "focal_tversky",
                       "--device", "cpu")
    assert predicted.exit_code == 0, predicted.output
    out = baseline_ws.predictions / "resunet2d__focal_tversky"
    assert sorted(p.name for p in out.iterdir()) == ["IBSR_06.nii.gz", "IBSR_07.nii.gz", "IBSR_08.nii.gz",
                                                    "ibsr_provenance.json"]  # which dataset they were made from
    again = invoke(baseline_ws, "baseline", "predict", "--model", "resunet2d", "--loss", "focal_tversky",
                   "--device", "cpu")
    assert again.exit_code == 0 and "3 already up to date" in again.output


@pytest.mark.parametrize("args,valid", [
    (["train", "--model", "vnet"], "'unet2d', 'resunet2d', 'denseunet2d', 'unet3d'"),
    (["train", "--loss", "hinge"], "'ce', 'dice', 'dice_ce', 'focal', 'tversky', 'focal_tversky'"),
    (["predict", "--device", "tpu"], "'auto', 'cuda', 'cpu'"),
    (["train", "--schedule", "step", *TINY], "'plateau', 'cosine'"),
])
def test_cli_refuses_bad_names_listing_the_valid_ones(baseline_ws, args, valid):
    result = invoke(baseline_ws, "baseline", *args)
    assert result.exit_code == 2 and f"'{args[2]}' is not one of {valid}" in said(result), result.output


def test_cli_refuses_a_workspace_without_a_dataset(tmp_path):
    result = invoke(tmp_path, "baseline", "train", "--epochs", "1", *TINY)
    assert result.exit_code == 1 and "no converted dataset" in result.output and "ibsr-nnunet convert" in result.output


@pytest.mark.parametrize("gradient, stepped, norm_after", [
    (float("nan"), False, None),
    (float("inf"), False, None),
    (100.0, True, GRADIENT_CLIP),  # 4 weights x 100: norm 200, clipped to 12
    (1.0, True, 2.0),  # norm 2: left as it is
])
def test_a_step_clips_the_gradient_norm_and_skips_a_non_finite_gradient(gradient, stepped, norm_after):
    model = torch.nn.Linear(2, 2, bias=False)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.weight.grad = torch.full_like(model.weight, gradient)
    assert apply_gradients(model, optimizer, torch.amp.GradScaler("cuda", enabled=False)) is stepped
    if stepped:
        assert torch.linalg.vector_norm(before - model.weight.detach()).item() == pytest.approx(norm_after, rel=1e-5)
    else:
        assert torch.equal(model.weight.detach(), before) and model.weight.grad is None
