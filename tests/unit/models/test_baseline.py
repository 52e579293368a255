"""The baseline kind on a hand-made run folder: its best weights, orientation, record, lock and progress."""

from __future__ import annotations

import json

from ibsr_nnunet.core.locks import Lock, lock_path
from ibsr_nnunet.models import load_model
from ibsr_nnunet.models.protocol import TrainingJob


def test_a_baseline_is_its_best_weights_and_its_orientation(ws, provenance):
    run = ws.baselines / "unet2d__dice_ce"
    provenance(run)
    model = load_model(ws, "unet2d__dice_ce")
    assert model.kind == "baseline" and not model.trained() and "is not trained in this workspace" in model.refusal()
    (run / "best.pt").write_bytes(b"w")
    (run / "orientation.json").write_text(json.dumps({"axcodes": ["R", "I", "A"], "slicing_axis": 2}))
    assert model.trained() and model.weight_files() == [run / "best.pt"] and model.axcodes == ("R", "I", "A")
    assert model.remake == "ibsr-nnunet baseline predict --model unet2d --loss dice_ce"
    assert "has not finished training" in model.refusal()
    (run / "run.json").write_text(json.dumps({"finished": True, "best_val_dice": 0.75, "train_seconds": 12.0}))
    assert model.refusal() is None
    assert model.validation().columns == {"internal_val_dice": 0.75} and model.training_seconds() == 12.0
    with Lock(lock_path(run), "baseline run", "ibsr-nnunet baseline train"):
        assert "is being trained right now" in model.refusal()


def test_a_refusal_says_what_to_run_then_the_command_asked_for(ws, provenance):
    missing = ws.baselines / "unet2d__dice" / "best.pt"
    assert load_model(ws, "unet2d__dice").refusal(then="predict") == (
        f"model unet2d__dice is not trained in this workspace (no {missing}); train it with `ibsr-nnunet baseline "
        f"train --model unet2d --loss dice`, then predict.")
    run = ws.baselines / "unet2d__dice"
    provenance(run, "0" * 64)
    (run / "checkpoint.pt").write_bytes(b"x")  # stale and without best weights: retraining it is what to do
    assert load_model(ws, "unet2d__dice").refusal(then="predict") == (
        f"model unet2d__dice is stale ({run}: made from dataset 000000000000, the workspace now holds ffffffffffff); "
        f"run `ibsr-nnunet baseline train --model unet2d --loss dice --archive-stale` first.")


def test_a_baselines_progress_is_its_record_and_log_and_finished_only_with_predictions(ws):
    run = ws.baselines / "unet2d__dice_ce"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"epochs_done": 4, "finished": True, "best_val_dice": 0.5}))
    (run / "log.csv").write_text("epoch,train_loss,val_loss,val_dice,lr,seconds\n" + "".join(
        f"{e},0.5,0.{e},0.{e + 5},0.001,{s}\n" for e, s in zip(range(1, 5), (10, 21, 33, 60))))
    model = load_model(ws, "unet2d__dice_ce")
    progress = model.progress(TrainingJob(epochs=4))
    assert (progress.folder, progress.epochs_done, progress.validation_dice) == (run, 4, 0.5)
    assert (progress.val_loss, progress.pseudo_dice, progress.finished) == (0.4, 0.9, False)  # no predictions yet
    assert progress.epoch_seconds == (11, 12, 27)  # log.csv's summed seconds, differenced (no runs recorded)
    (ws.predictions / "unet2d__dice_ce").mkdir(parents=True)
    (ws.predictions / "unet2d__dice_ce" / "IBSR_06.nii.gz").write_bytes(b"")
    assert model.progress(TrainingJob()).finished


def test_a_baseline_not_started_has_no_progress_yet(ws):
    progress = load_model(ws, "unet3d__focal").progress(TrainingJob(epochs=4))
    assert (progress.epochs_done, progress.finished, progress.runs, progress.epoch_seconds) == (0, False, (), ())
