"""Run history and stall on the real local SLURM cluster (slurm/local-cluster.sh), CPU only: a fold with a real
`--time` limit gets SLURM's own USR1 warning, requeues, and `status` reads the restart and its reason from runs.jsonl;
a fold whose slot is shorter than start-up plus one epoch ends FAILED and stalled instead of requeueing forever."""

from __future__ import annotations

import json
import subprocess

import pytest

from ibsr_nnunet.core.runlog import read_runs
from ibsr_nnunet.nnunet.paths import trainer_name
from local_cluster import cli, copy_workspace, job_state, rows, wait_for

pytestmark = pytest.mark.integration
CPU = ["--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1"]


def fold_job(ws) -> str:
    return f"{json.loads((ws.slurm / 'jobs.json').read_text())['jobs'][0]['job_id']}_0"


def test_a_time_limited_fold_requeues_on_usr1_and_status_reads_it_from_runs_jsonl(cluster, planned, tmp_path):
    """2-minute slots, USR1 60 s before the end: the first run saves at the warning and the job requeues."""
    ws = copy_workspace(planned, tmp_path / "limited")
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", "1000",
                    "--iterations-per-epoch", "2", *CPU, "--time", "2", "--signal-grace", "60")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = fold_job(ws)
    folder = ws.results_dataset / f"{trainer_name(1000, 2)}__nnUNetPlans__2d" / "fold_0"
    try:
        wait_for(lambda: len(read_runs(folder)) >= 2 and read_runs(folder)[0].reason, 300, "a requeued run", 1)
        row = rows(ws)[("fold", "2d", 0)]
    finally:
        subprocess.run(["scancel", job.split("_")[0]], check=False)
    assert read_runs(folder)[0].reason == "usr1", (folder / "runs.jsonl").read_text()
    assert row["restarts"] >= 1 and "usr1" in row["end_reasons"], row
    log = next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text()
    assert "received SIGUSR1" in log and "requeueing" in log


def test_a_slot_shorter_than_one_epoch_fails_stalled_and_never_loops(cluster, planned, tmp_path):
    """2-minute slots with a 100-second grace (USR1 at most 20 s in) and epochs of minutes: two runs in a row end
    at the warning without an epoch, and the job fails instead of requeueing again."""
    ws = copy_workspace(planned, tmp_path / "stalled")
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", "5",
                    "--iterations-per-epoch", "2000", *CPU, "--time", "2", "--signal-grace", "100")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = fold_job(ws)
    try:
        wait_for(lambda: job_state(job).get("JobState") == "FAILED", 600, f"{job} to fail", 1)
    finally:
        subprocess.run(["scancel", job.split("_")[0]], check=False)
    state = job_state(job)
    assert state["ExitCode"] == "76:0" and int(state["Restarts"]) <= 2, state
    folder = ws.results_dataset / f"{trainer_name(5, 2000)}__nnUNetPlans__2d" / "fold_0"
    runs = read_runs(folder)
    assert len(runs) <= 3 and [r.reason for r in runs[-2:]] == ["usr1", "usr1"] and runs[-1].end["stalled"], runs
    row = rows(ws)[("fold", "2d", 0)]
    assert row["state"] == "FAILED" and row["stalled"] and "longer --time" in row["reason"], row
    log = " ".join(next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text().split())
    assert "step stalled (exit code 76)" in log and "smaller --signal-grace" in log
