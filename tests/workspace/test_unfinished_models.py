"""Nothing is scored or used from a model that is not finished: a baseline run being trained (or never finished) is
refused by `baseline predict` and `segment`, and a prediction set whose weights (a baseline's best.pt, an nnU-Net
fold's checkpoint) changed since it was predicted is left off the leaderboard, redone by `baseline predict`, and
re-segmented by `segment`."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import CLI, copy_workspace, invoke, said
from ibsr_nnunet.core import checksums, provenance
from ibsr_nnunet.core.workspace import Workspace

MODEL = "unet2d__dice_ce"
BASELINE = ["--model", "unet2d", "--loss", "dice_ce"]
TINY = ["--width", "8", "--depth", "3", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]


def scan_folder(phantom_root: Path, tmp_path: Path) -> Path:
    """A folder holding one phantom scan (the test case) to segment."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz", scans / "IBSR_08.nii.gz")
    return scans


def predict(ws: Workspace):
    return invoke(ws, "baseline", "predict", *BASELINE, "--device", "cpu")


def segment(ws: Workspace, scans: Path, out: Path):
    return invoke(ws, "segment", str(scans), "--output", str(out), "--model", MODEL, "--device", "cpu")


def test_a_baseline_being_trained_is_refused_until_it_finishes(converted_copy, phantom_root, tmp_path):
    ws, run = converted_copy, converted_copy.baselines / MODEL
    scans, out = scan_folder(phantom_root, tmp_path), tmp_path / "out"
    invoke(ws, "--help")  # the command line imported before the race: the refusals below take milliseconds
    training = subprocess.Popen([*CLI, "--workspace", str(ws.root), "baseline", "train", *BASELINE, "--epochs", "10",
                                 "--iterations-per-epoch", "5", "--patience", "10", *TINY],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.time() + 300
        while not (run / "run.json").is_file() and training.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # until its first epoch is written: best.pt and run.json exist, unfinished
        assert training.poll() is None and (run / "best.pt").is_file(), training.communicate()[0][-3000:]
        # paused, as `scontrol suspend` would: it keeps its lock, and it cannot finish between the two refusals
        os.kill(training.pid, signal.SIGSTOP)
        try:
            busy = f"({run}) is being trained right now by PID {training.pid} on "
            refused = predict(ws)
            assert refused.exit_code == 1 and busy in said(refused) and "wait for it to finish, then predict." in (
                said(refused)), said(refused)
            refused = segment(ws, scans, out)
            assert refused.exit_code == 1 and busy in said(refused) and "wait for it to finish, then segment." in (
                said(refused)), said(refused)
        finally:
            os.kill(training.pid, signal.SIGCONT)
        assert training.poll() is None  # both were refused while it was still training
        output, _ = training.communicate(timeout=300)
    finally:
        if training.poll() is None:
            training.kill()
            training.communicate()
    assert training.returncode == 0 and "finished after 10 epochs" in " ".join(output.split()), output[-3000:]
    assert not (ws.predictions / MODEL).exists() and not list(out.glob("*_tissue.nii.gz"))
    done = predict(ws)
    assert done.exit_code == 0 and "wrote 3 predictions" in said(done), said(done)
    done = segment(ws, scans, out)
    assert done.exit_code == 0 and (out / "IBSR_08_tissue.nii.gz").is_file(), said(done)


@pytest.fixture(scope="module")
def trained(converted_ws, tmp_path_factory) -> Workspace:
    """The session's converted phantom with a unet2d__dice_ce trained for seconds, and its prediction set."""
    ws = copy_workspace(converted_ws, tmp_path_factory.mktemp("unfinished") / "ws")
    done = invoke(ws, "baseline", "train", *BASELINE, "--epochs", "2", "--iterations-per-epoch", "5", *TINY)
    assert done.exit_code == 0, done.output
    assert predict(ws).exit_code == 0
    return ws


@pytest.fixture
def trained_copy(trained, tmp_path) -> Workspace:
    return copy_workspace(trained, tmp_path / "ws")


def test_a_run_whose_training_did_not_finish_is_refused(trained_copy, phantom_root, tmp_path):
    ws, run = trained_copy, trained_copy.baselines / MODEL
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "finished": False}))  # as a run stopped by SIGUSR1 leaves it
    unfinished = (f"({run}) has not finished training (its run.json does not say finished): run `ibsr-nnunet "
                  f"baseline train --model unet2d --loss dice_ce` with the options it was started with to finish it, "
                  f"then")
    refused = predict(ws)
    assert refused.exit_code == 1 and f"{unfinished} predict." in said(refused), said(refused)
    refused = segment(ws, scan_folder(phantom_root, tmp_path), tmp_path / "out")
    assert refused.exit_code == 1 and f"{unfinished} segment." in said(refused), said(refused)


def retrain(run: Path) -> None:
    """Other weights in best.pt, as retraining the run leaves: one tensor halved, still a loadable model."""
    saved = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    first = next(iter(saved["model"]))
    saved["model"][first] = saved["model"][first] * 0.5
    torch.save(saved, run / "best.pt")


def test_a_set_predicted_with_other_weights_is_left_out_redone_and_re_segmented(trained_copy, phantom_root, tmp_path):
    ws, run = trained_copy, trained_copy.baselines / MODEL
    shutil.copytree(ws.predictions / MODEL, ws.predictions / "copied")  # no record of its own: judged as before
    (ws.predictions / "copied" / provenance.PROVENANCE_FILE).unlink()
    scans, out = scan_folder(phantom_root, tmp_path), tmp_path / "out"
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert sorted(pd.read_csv(ws.leaderboard)["model"]) == ["copied", MODEL]
    assert segment(ws, scans, out).exit_code == 0
    first_map = (out / "IBSR_08_tissue.nii.gz").stat().st_mtime_ns

    (run / "best.pt").touch()  # the same bytes, touched: the same weights, still ranked
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert sorted(pd.read_csv(ws.leaderboard)["model"]) == ["copied", MODEL]
    retrain(run)
    board = invoke(ws, "leaderboard", "--no-figures")
    assert board.exit_code == 0 and pd.read_csv(ws.leaderboard)["model"].tolist() == ["copied"]
    assert (f"not ranked: {MODEL}: its predictions were made with other weights (baselines/{MODEL}/best.pt changed "
            f"at ") in said(board) and "run `ibsr-nnunet baseline predict --model unet2d --loss dice_ce` to rank it" \
        in said(board), said(board)
    again = segment(ws, scans, out)
    assert again.exit_code == 0 and "nothing redone" not in said(again), said(again)
    assert (out / "IBSR_08_tissue.nii.gz").stat().st_mtime_ns != first_map

    redone = predict(ws)
    assert redone.exit_code == 0 and "was predicted with other weights" in said(redone), said(redone)
    assert "already up to date" not in said(redone)  # every case again, although its files are newer than best.pt
    recorded = provenance.recorded_weights(ws.predictions / MODEL)
    assert recorded[0]["sha256"] == checksums.sha256(run / "best.pt")
    board = invoke(ws, "leaderboard", "--no-figures")
    assert board.exit_code == 0 and sorted(pd.read_csv(ws.leaderboard)["model"]) == ["copied", MODEL], said(board)


def test_segment_shows_no_scores_made_with_other_weights(trained_copy):
    from ibsr_nnunet.core.errors import InputError
    from ibsr_nnunet.segment import choose_model

    ws = trained_copy
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert choose_model(ws, None).name == MODEL and choose_model(ws, MODEL).scores["mean_dice"] >= 0
    retrain(ws.baselines / MODEL)  # leaderboard.csv still ranks it, with the scores of the weights before
    assert choose_model(ws, MODEL).scores is None
    with pytest.raises(
            InputError,
            match=rf"the leaderboard's best model {MODEL} was scored with other weights than "
                  rf"it holds now \(baselines/{MODEL}/best.pt changed at .*\); predict it again"):
        choose_model(ws, None)


def test_an_nnunet_set_whose_fold_was_retrained_is_left_out(converted_copy):
    from ibsr_nnunet.nnunet.paths import fold_folder

    ws = converted_copy
    checkpoint = fold_folder(ws, "2d", 0, trainer="IbsrTrainer") / "checkpoint_final.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"fold 0")
    out = ws.predictions / "nnunet_2d"
    out.mkdir(parents=True)
    for case in ws.cases("heldout"):  # the references: what the set scores does not matter here
        shutil.copy(case.label, out / f"{case.id}.nii.gz")
    signature = provenance.weights_signature(ws, [checkpoint])
    provenance.write_provenance(out, provenance.dataset_fingerprint(ws), weights=signature)
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert pd.read_csv(ws.leaderboard)["model"].tolist() == ["nnunet_2d"]
    checkpoint.write_bytes(b"fold 0, retrained")
    board = invoke(ws, "leaderboard", "--no-figures")
    assert board.exit_code == 1 and pd.read_csv(ws.leaderboard).empty  # no score of the old weights survives
    assert (f"nnunet_2d: its predictions were made with other weights ({checkpoint.relative_to(ws.root)} changed at "
            in said(board) and "run `ibsr-nnunet ensemble` to rank it" in said(board)), said(board)
