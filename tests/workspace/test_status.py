"""`status` from recorded run histories and logs with known numbers: restarts, end reasons, redone epochs, GPU-hours,
seconds per epoch, per-job and campaign ETAs worked out by hand, the stall, and all of it after SLURM forgot the
jobs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from helpers import invoke
from ibsr_nnunet.campaign.eta import FINAL_JOB_SECONDS, History, campaign_eta, final_job_seconds, job_eta
from ibsr_nnunet.campaign.status import status
from ibsr_nnunet.core import provenance
from ibsr_nnunet.core.runlog import RUNS_FILE, parse_utc, utc
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

TRAINER = trainer_name(100, 250)
NOW = time.time()


def run_lines(runs: list[dict]) -> str:
    """runs.jsonl for runs given as {start fields..., "end": {end fields} or None}."""
    out = []
    for i, run in enumerate(runs):
        end = run.pop("end")
        out.append({"event": "start", "run": f"r{i}", "start": utc(run.pop("at")), "device": "cuda",
                    "epochs_redone": 0, **run})
        if end is not None:
            out.append({"event": "end", "run": f"r{i}", "end": utc(NOW), **end})
    return "".join(json.dumps(line) + "\n" for line in out)


def nnunet_log(folder: Path, name: str, epochs: range, seconds: list[float]) -> str:
    """A training log as nnU-Net stamps it: each epoch's number, losses, pseudo Dice and time."""
    lines = []
    for epoch, took in zip(epochs, seconds):
        lines += [f"2026-11-30 10:00:00.000001: Epoch {epoch}", "2026-11-30 10:00:00.000002: train_loss -0.5",
                  "2026-11-30 10:00:00.000003: val_loss -0.4", "2026-11-30 10:00:00.000004: Pseudo dice [0.8, 0.9]",
                  f"2026-11-30 10:00:00.000005: Epoch time: {took} s"]
    (folder / name).write_text("\n".join(lines) + "\n")
    return name


def ended(reason: str, epoch_end: int, seconds: float, startup: float, unsaved: float) -> dict:
    return {"reason": reason, "exit_code": 75, "epoch_end": epoch_end, "seconds": seconds, "startup_seconds": startup,
            "since_last_epoch_seconds": unsaved, "stalled": False}


@pytest.fixture
def campaign(converted_copy) -> Path:
    """2d folds 0 (running on an H200 after a run on a V100) and 1 (pending after one time-limited run), baseline
    unet2d__dice_ce (running on CPU) and the final job (pending; an earlier final job took 12:30)."""
    ws = converted_copy
    fingerprint = provenance.dataset_fingerprint(ws)
    fold0, fold1 = (fold_folder(ws, "2d", fold, trainer=TRAINER) for fold in (0, 1))
    baseline = ws.baselines / "unet2d__dice_ce"
    for folder in (fold0, fold1, baseline):
        folder.mkdir(parents=True)
        provenance.write_provenance(folder, fingerprint)
    # fold 0: epochs of 600 s on the V100 (not the current device), then 310 s, then 290..330 s on the H200
    logs = [nnunet_log(fold0, "training_log_1.txt", range(0, 10), [600.0] * 10),
            nnunet_log(fold0, "training_log_2.txt", range(10, 20), [310.0] * 10),
            nnunet_log(fold0, "training_log_3.txt", range(20, 25), [290.0, 300.0, 310.0, 320.0, 330.0])]
    (fold0 / RUNS_FILE).write_text(run_lines([
        {"at": NOW - 9000, "device_name": "Tesla V100", "epoch_start": 0, "log": logs[0],
         "end": ended("usr1", 10, 3600.0, 400.0, 150.0)},
        {"at": NOW - 5400, "device_name": "NVIDIA H200", "epoch_start": 10, "log": logs[1],
         "end": ended("usr1", 20, 3600.0, 300.0, 50.0)},
        {"at": NOW - 1800, "device_name": "NVIDIA H200", "epoch_start": 20, "log": logs[2], "epochs_redone": 1,
         "end": None}]))
    log = nnunet_log(fold1, "training_log_1.txt", range(0, 10), [300.0] * 10)
    (fold1 / RUNS_FILE).write_text(run_lines([
        {"at": NOW - 3600, "device_name": "NVIDIA H200", "epoch_start": 0, "log": log,
         "end": ended("usr1", 10, 3600.0, 400.0, 100.0)}]))
    # baseline: log.csv's seconds are training time summed across runs; run 2 resumed at epoch 3
    (baseline / "run.json").write_text(json.dumps({"epochs_done": 6, "finished": False, "best_val_dice": 0.5}))
    (baseline / "log.csv").write_text("epoch,train_loss,val_loss,val_dice,lr,seconds\n" + "".join(
        f"{e},0.5,0.4,0.6,0.001,{s}\n" for e, s in zip(range(1, 7), (10, 21, 33, 60, 72, 85))))
    (baseline / RUNS_FILE).write_text(run_lines([
        {"at": NOW - 200, "device": "cpu", "device_name": "AMD EPYC", "epoch_start": 0,
         "end": ended("usr1", 3, 40.0, 15.0, 4.0)},
        {"at": NOW - 100, "device": "cpu", "device_name": "AMD EPYC", "epoch_start": 3, "end": None}]))
    (ws.slurm / "logs").mkdir(parents=True)
    (ws.slurm / "logs" / "final_99.out").write_text(
        "[ibsr-nnunet 2026-11-30T10:00:00Z] job 99: ensemble of X\n[ibsr-nnunet 2026-11-30T10:10:00Z] job 99: "
        "leaderboard\n[ibsr-nnunet 2026-11-30T10:12:30Z] job 99: finished: /ws/leaderboard.csv\n")
    (ws.slurm / "jobs.json").write_text(json.dumps({"jobs": [
        {"kind": "fold", "name": "2d", "job_id": "101", "folds": [0, 1], "trainer": TRAINER, "epochs": 100,
         "iterations": 250, "array_parallel": 1},
        {"kind": "baseline", "name": "unet2d__dice_ce", "job_id": "102", "folds": [], "trainer": TRAINER,
         "epochs": 20, "iterations": 250, "array_parallel": None},
        {"kind": "final", "name": "final", "job_id": "103", "folds": [], "trainer": TRAINER, "epochs": 100,
         "iterations": 250, "array_parallel": None}]}))
    return ws


def answering(text: str):
    def runner(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, stdout=text, stderr="")
    return runner


RUNNING = ("JobId=201 ArrayJobId=101 ArrayTaskId=0 JobState=RUNNING Reason=None Restarts=2 ExitCode=0:0\n"
           "JobId=101 ArrayJobId=101 ArrayTaskId=1 JobState=PENDING Reason=Resources Restarts=1 ExitCode=0:0\n"
           "JobId=102 JobState=RUNNING Reason=None Restarts=1 ExitCode=0:0\n"
           "JobId=103 JobState=PENDING Reason=Dependency Restarts=0 ExitCode=0:0\n")


def test_each_job_and_the_campaign_get_the_hand_computed_numbers(campaign):
    report = status(campaign, runner=answering(RUNNING), now=NOW)
    rows = {(r.kind, r.fold): r for r in report.rows}
    fold0, fold1, base = rows[("fold", 0)], rows[("fold", 1)], rows[("baseline", None)]

    # fold 0: the 15 H200 epochs (10 × 310 s, then 290..330 s) have median 310 s; 25 of 100 epochs done.
    # overhead per start: median start-up (400, 300) = 350 s less one epoch (310) = 40 s, plus the median unsaved
    # part-epoch (150, 50) = 100 s: 140 s. Slots held 10 epochs: ceil(75 / 10) = 8 runs, one is running: 7 starts.
    # ETA = 310 × 75 + 140 × 7 = 24230 s
    assert (fold0.restarts, fold0.end_reasons, fold0.epochs_redone) == (2, ["usr1", "usr1"], 1)
    assert (fold0.epochs_done, fold0.epochs_total, fold0.seconds_per_epoch) == (25, 100, 310.0)
    assert fold0.running and not fold0.stalled and fold0.eta_seconds == 24230.0
    assert fold0.gpu_hours == pytest.approx((3600 + 3600 + 1800) / 3600, abs=0.01)
    assert parse_utc(fold0.eta_utc) == pytest.approx(NOW + 24230, abs=120)

    # fold 1: 300 s epochs, 90 left; overhead (400 - 300) + 100 = 200 s; not running: ceil(90 / 10) = 9 starts.
    # ETA = 300 × 90 + 200 × 9 = 28800 s. Restarts: SLURM's 1 outweighs the single recorded run.
    assert (fold1.restarts, fold1.seconds_per_epoch, fold1.eta_seconds, fold1.running) == (1, 300.0, 28800.0, False)

    # baseline: epoch durations 11, 12 (run 1) and 12, 13 (run 2; its first epoch, 27 s, spans the restart): 12 s.
    # overhead (15 - 12) + 4 = 7 s; slots of 3 epochs: ceil(14 / 3) = 5 runs, one running: 4 starts.
    # ETA = 12 × 14 + 7 × 4 = 196 s. CPU runs: no GPU-hours.
    assert (base.seconds_per_epoch, base.epochs_done, base.epochs_total) == (12.0, 6, 20)
    assert (base.eta_seconds, base.gpu_hours, base.restarts) == (196.0, 0.0, 1)

    # campaign: 2 jobs run now; fold 0 (24230) and the baseline (196) hold the slots, fold 1 follows the baseline:
    # 196 + 28800 = 28996 s; the final job took 12:30 before: 28996 + 750 = 29746 s
    assert (report.parallel, report.final_seconds, report.eta_seconds) == (2, 750.0, 29746.0)
    assert parse_utc(report.eta_utc) == pytest.approx(NOW + 29746, abs=120)


def test_history_survives_slurm_forgetting_the_jobs(campaign):
    report = status(campaign, runner=answering(""), now=NOW)  # MinJobAge passed: the controller knows none of them
    rows = {(r.kind, r.fold): r for r in report.rows}
    assert (rows[("fold", 0)].restarts, rows[("fold", 0)].end_reasons) == (2, ["usr1", "usr1"])
    assert rows[("fold", 1)].restarts == 0 and rows[("fold", 1)].end_reasons == ["usr1"]
    assert rows[("fold", 0)].eta_seconds == 24230.0 and rows[("baseline", None)].eta_seconds == 196.0
    # nothing runs now: the array throttle (1) and the unfinished baseline give 2 slots
    assert report.parallel == 2


def test_a_stalled_fold_shows_the_fix_and_blocks_the_campaign_eta(campaign):
    fold1 = fold_folder(campaign, "2d", 1, trainer=TRAINER)
    stuck = {**ended("usr1", 10, 130.0, None, 130.0)}
    with open(fold1 / RUNS_FILE, "a") as handle:
        handle.write(run_lines([{"at": NOW - 600, "device_name": "NVIDIA H200", "epoch_start": 10, "end": dict(stuck)},
                                {"at": NOW - 300, "device_name": "NVIDIA H200", "epoch_start": 10,
                                 "end": dict(stuck)}]).replace('"r0"', '"s0"').replace('"r1"', '"s1"'))
    report = status(campaign,
                    runner=answering(RUNNING.replace("ArrayTaskId=1 JobState=PENDING Reason=Resources",
                                                  "ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode")),
                    now=NOW)
    row = next(r for r in report.rows if r.fold == 1)
    assert row.stalled and row.eta_seconds is None and row.end_reasons == ["usr1"] * 3
    assert "longer --time or a smaller --signal-grace" in row.reason
    assert report.eta_seconds is None and "2d fold 1" in report.eta_note


def test_status_json_has_the_history_keys_per_fold_and_baseline(campaign, monkeypatch, tmp_path):
    # no scontrol on PATH: SLURM does not answer (with /usr/bin on it, the suite's local cluster would answer
    # "no such jobs" once the cluster tests have started it, which is another case)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = invoke(campaign, "status", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    for row in (r for r in table["jobs"] if r["kind"] != "final"):
        assert {"restarts", "end_reasons", "seconds_per_epoch", "epochs_done", "epochs_total", "eta_seconds",
                "gpu_hours", "stalled"} <= set(row)
        assert isinstance(row["restarts"], int) and isinstance(row["end_reasons"], list)
    assert table["campaign"]["eta_seconds"] == 29746.0  # the same numbers: nothing runs now, 2 slots
    rendered = invoke(campaign, "status")
    assert rendered.exit_code == 0 and "campaign: 8:15:46 (" in " ".join(rendered.output.split())


def test_eta_formulas():
    history = History(startup_seconds=100.0, unsaved_seconds=20.0, slot_epochs=4.0)
    assert job_eta(history, 10.0, 10, running=False) == 10 * 10 + (100 - 10 + 20) * 3
    assert job_eta(history, 10.0, 10, running=True) == 10 * 10 + 110 * 2
    assert job_eta(History(), 10.0, 10, running=True) == 100.0  # no restarts measured: none expected
    assert job_eta(history, None, 10, running=True) is None and job_eta(history, None, 0, running=True) == 0.0
    # running first (100, 30), then 50 and 70 in order on 2 slots: [100, 30] -> [100, 80] -> [150, 100]; +20
    assert campaign_eta([(50.0, False), (100.0, True), (70.0, False), (30.0, True)], 2, 20.0) == 170.0
    assert campaign_eta([(50.0, False)], 0, 0.0) == 50.0
    assert final_job_seconds([]) == FINAL_JOB_SECONDS
    assert final_job_seconds(["[ibsr-nnunet 2026-11-30T10:00:00Z] job 1: ensemble\n"]) == FINAL_JOB_SECONDS


def test_a_fold_not_started_yet_borrows_the_eta_of_its_measured_siblings(campaign):
    jobs = json.loads((campaign.slurm / "jobs.json").read_text())
    jobs["jobs"][0]["folds"] = [0, 1, 2]
    (campaign.slurm / "jobs.json").write_text(json.dumps(jobs))
    report = status(campaign, runner=answering(RUNNING), now=NOW)
    fold2 = next(r for r in report.rows if r.fold == 2)
    # 100 epochs left, not running: with fold 0's numbers 310 × 100 + 140 × 10 = 32400, with fold 1's
    # 300 × 100 + 200 × 10 = 32000; median 32200
    assert (fold2.eta_seconds, fold2.eta_from, fold2.seconds_per_epoch) == (32200.0, "siblings", None)
    # slots: fold 0 (24230) and the baseline (196) run; fold 1 follows the baseline (28996), fold 2 fold 0:
    # 24230 + 32200 = 56430; + 750 for the final job
    assert report.eta_seconds == 57180.0
