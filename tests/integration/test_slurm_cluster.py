"""The campaign on a real single-node SLURM cluster (slurm/local-cluster.sh; sbatch is not mocked), CPU only.

One phantom workspace is planned once and copied: a broken copy must fail once and stay failed, with the final
job never running; the other runs 2d + 3d_fullres × 2 folds, a baseline and the final job to leaderboard.csv,
while one fold gets USR1 (`scancel --batch --signal=USR1`) and another `scontrol requeue` mid-training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from ibsr_nnunet.core.locks import Holder, lock_path, read_holder
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import trainer_name
from local_cluster import cli, copy_workspace, job_state, rows, wait_for

pytestmark = pytest.mark.integration
TINY = ["--epochs", "4", "--iterations-per-epoch", "2", "--device", "cpu", "--gpus-per-job", "0",
        "--cpus-per-task", "1", "--signal-grace", "300"]
TRAINER = trainer_name(4, 2)


def fold_dir(ws: Workspace, config: str, fold: int) -> Path:
    return ws.results_dataset / f"{TRAINER}__nnUNetPlans__{config}" / f"fold_{fold}"


def resumed_at(ws: Workspace, config: str, fold: int, job_log: Path) -> int:
    """The epoch the rerun resumed at, from the job log's `resuming ...` line (checked against the training logs)."""
    text = " ".join(job_log.read_text().split())
    found = re.findall(rf"resuming {TRAINER} {config} fold {fold} from checkpoint_\w+\.pth at epoch (\d+)", text)
    assert found, f"no 'resuming' line in {job_log}:\n{job_log.read_text()[-3000:]}"
    logs = sorted(fold_dir(ws, config, fold).glob("training_log_*.txt"))
    assert len(logs) >= 2
    first_epoch = re.search(r": Epoch (\d+)\s*$", logs[-1].read_text(), re.MULTILINE)
    assert first_epoch and int(first_epoch.group(1)) == int(found[-1])
    return int(found[-1])


def test_broken_dataset_fails_once_and_the_final_job_never_runs(cluster, planned, tmp_path):
    ws = copy_workspace(planned, tmp_path / "broken")
    for case in (ws.preprocessed_dataset / "nnUNetPlans_2d").iterdir():  # preprocessed data gone: a real error
        case.unlink() if case.is_file() else shutil.rmtree(case)
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", *TINY)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    fold_job = f"{jobs[0]['job_id']}_0"
    final_job = jobs[-1]["job_id"]
    assert jobs[-1]["kind"] == "final"
    wait_for(lambda: job_state(fold_job).get("JobState") == "FAILED", 180, f"{fold_job} to fail")
    time.sleep(10)  # a requeue loop would show by now (a requeued job restarts within ~10 s here)
    state = job_state(fold_job)
    assert state["JobState"] == "FAILED" and state["Restarts"] == "0", state
    final = job_state(final_job)
    assert final["JobState"] == "CANCELLED" and final["Reason"] == "DependencyNeverSatisfied", final
    assert not list(ws.slurm.glob("logs/final_*.out")), "the final job ran"
    table = rows(ws)
    assert table[("fold", "2d", 0)]["state"] == "FAILED" and not table[("fold", "2d", 0)]["finished"]
    assert table[("final", "final", None)]["state"] == "CANCELLED"
    log = next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text()
    assert "not requeued" in log and "requeueing" not in log


def test_campaign_survives_usr1_and_requeue_and_ends_with_a_leaderboard(cluster, planned, tmp_path):
    ws = copy_workspace(planned, tmp_path / "campaign")
    args = ["submit", "--configs", "2d,3d_fullres", "--folds", "0,1", "--baselines", "unet2d__dice_ce", *TINY]
    dry = cli(ws.root, *args, "--dry-run")
    assert dry.returncode == 0 and "nothing was" in dry.stdout, dry.stdout + dry.stderr
    assert not (ws.slurm / "jobs.json").exists()
    submitted = cli(ws.root, *args)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    assert [(j["kind"], j["name"]) for j in jobs] == [("fold", "2d"), ("fold", "3d_fullres"),
                                                      ("baseline", "unet2d__dice_ce"), ("final", "final")]
    ids = {j["name"]: j["job_id"] for j in jobs}

    again = cli(ws.root, *args)  # queued or running: nothing is submitted twice
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout + again.stderr
    assert len(json.loads((ws.slurm / "jobs.json").read_text())["jobs"]) == 4

    # USR1 to 2d fold 0 (what --signal=B:USR1@grace delivers before the time limit), once a checkpoint exists
    usr1_job = f"{ids['2d']}_0"
    wait_for(lambda: (fold_dir(ws, "2d", 0) / "checkpoint_latest.pth").is_file(), 300,
             "2d fold 0's first checkpoint", 0.1)
    assert job_state(usr1_job)["JobState"] == "RUNNING"
    subprocess.run(["scancel", "--batch", "--signal=USR1", usr1_job], check=True)

    # `scontrol requeue` (SIGTERM to every process of the job, as preemption does) to 3d_fullres fold 1
    requeue_job = f"{ids['3d_fullres']}_1"
    wait_for(lambda: (fold_dir(ws, "3d_fullres", 1) / "checkpoint_latest.pth").is_file(), 420,
             "3d_fullres fold 1's first checkpoint", 0.1)
    assert job_state(requeue_job)["JobState"] == "RUNNING"
    subprocess.run(["scontrol", "requeue", requeue_job], check=True)

    final = ids["final"]
    wait_for(lambda: job_state(final).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 900, "the final job", 2)
    table = rows(ws)
    assert job_state(final)["JobState"] == "COMPLETED", (table, (ws.slurm / "logs" / f"final_{final}.out").read_text()
                                                         if (ws.slurm / "logs" / f"final_{final}.out").exists() else "")
    assert ws.leaderboard.is_file() and ws.leaderboard.read_text().strip()

    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            row = table[("fold", config, fold)]
            assert (row["state"] == "COMPLETED" and row["finished"]
                    and row["epochs_done"] == row["epochs_total"] == 4), row
    assert table[("fold", "2d", 0)]["restarts"] >= 1 and table[("fold", "3d_fullres", 1)]["restarts"] >= 1
    assert table[("baseline", "unet2d__dice_ce", None)]["state"] == "COMPLETED"
    assert table[("final", "final", None)]["finished"]

    logs = ws.slurm / "logs"
    assert resumed_at(ws, "2d", 0, logs / f"nnunet-2d_{ids['2d']}_0.out") >= 1
    assert resumed_at(ws, "3d_fullres", 1, logs / f"nnunet-3d_fullres_{ids['3d_fullres']}_1.out") >= 1
    usr1_log = (logs / f"nnunet-2d_{ids['2d']}_0.out").read_text()
    assert "received SIGUSR1" in usr1_log and "exit code 75 after SIGUSR1" in usr1_log

    rendered = cli(ws.root, "status")
    assert rendered.returncode == 0 and "COMPLETED" in rendered.stdout
    done = cli(ws.root, *args)  # everything finished: nothing again
    assert done.returncode == 0 and "nothing to submit" in done.stdout, done.stdout


def test_a_live_lock_holder_makes_the_fold_job_fail_naming_it(cluster, planned, tmp_path):
    """Another live writer holds fold 0 (a lock of another host, heartbeat fresh): the job ends FAILED with exit
    73, names the holder in its log, is not requeued, and status says why."""
    ws = copy_workspace(planned, tmp_path / "locked")
    lock = lock_path(fold_dir(ws, "2d", 0))
    lock.parent.mkdir(parents=True)
    holder = Holder(pid=4242, host="node7", boot_id="another-boot", start_time="1", slurm_job_id="999",
                    slurm_restart_count=0, command="ibsr-nnunet train --fold 0 --config 2d", heartbeat=time.time())
    lock.write_text(json.dumps(asdict(holder)))
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", *TINY)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    fold_job = f"{json.loads((ws.slurm / 'jobs.json').read_text())['jobs'][0]['job_id']}_0"
    wait_for(lambda: job_state(fold_job).get("JobState") == "FAILED", 180, f"{fold_job} to fail")
    time.sleep(5)
    state = job_state(fold_job)
    assert (state["ExitCode"], state["Restarts"]) == ("73:0", "0"), state
    log = " ".join(next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text().split())
    assert "is being written by PID 4242 on node7, SLURM job 999 (restart 0)" in log
    assert "another writer holds what it would write (named above); not requeued" in log
    row = rows(ws)[("fold", "2d", 0)]
    assert row["state"] == "FAILED" and "another writer held the lock" in row["reason"], row
    assert not fold_dir(ws, "2d", 0).exists() and json.loads(lock.read_text())["pid"] == 4242


def test_a_killed_trainers_lock_is_taken_over_by_the_requeued_run(cluster, planned, tmp_path):
    """`kill -9` of train inside a fold job (as the OOM killer or a lost node would) leaves its lock behind; after
    `scontrol requeue` the next run of the same job takes it over and finishes the fold."""
    ws = copy_workspace(planned, tmp_path / "killed")
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", *TINY)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    fold_job = f"{json.loads((ws.slurm / 'jobs.json').read_text())['jobs'][0]['job_id']}_0"
    folder = fold_dir(ws, "2d", 0)
    wait_for(lambda: (folder / "checkpoint_latest.pth").is_file(), 300, "the first checkpoint", 0.1)
    trainer = read_holder(lock_path(folder))
    assert trainer.slurm_job_id == fold_job and trainer.slurm_restart_count == 0
    os.kill(trainer.pid, signal.SIGKILL)
    wait_for(lambda: job_state(fold_job).get("JobState") == "FAILED", 120, f"{fold_job} to fail")
    assert lock_path(folder).exists()
    subprocess.run(["scontrol", "requeue", fold_job], check=True)
    wait_for(lambda: job_state(fold_job).get("JobState") == "COMPLETED", 400, f"{fold_job} to complete", 1)
    log = " ".join(next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text().split())
    assert f"took over the lock on 2d fold 0 ({TRAINER}) from PID {trainer.pid}" in log
    assert "resuming" in log and (folder / "checkpoint_final.pth").is_file() and not lock_path(folder).exists()


def test_a_fold_script_sbatched_by_hand_registers_requeues_after_usr1_and_finishes(cluster, planned, tmp_path):
    """`script --fold 0 --config 2d > fold0.sbatch && sbatch fold0.sbatch`: the job records itself in jobs.json
    (once, though it runs twice), `submit` then leaves fold 0 alone, USR1 requeues it, and it finishes; with
    --stage-data each run reads node-local data (the second reuses the first's copy)."""
    ws = copy_workspace(planned, tmp_path / "by hand")
    scratch = tmp_path / "node disk"
    options = [o for o in TINY if o != "--signal-grace" and o != "300"] + [
        "--time", "10", "--signal-grace", "60", "--stage-data", "--local-scratch", str(scratch)]
    rendered = cli(ws.root, "script", "--fold", "0", "--config", "2d", *options)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    script = tmp_path / "fold0.sbatch"
    script.write_text(rendered.stdout)
    job = subprocess.run(["sbatch", "--parsable", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.strip()
    log = tmp_path / f"slurm-{job}.out"  # sbatch's default log, in the folder it ran from
    folder = fold_dir(ws, "2d", 0)

    def recorded() -> list[dict]:
        path = ws.slurm / "jobs.json"
        return [r for r in json.loads(path.read_text())["jobs"] if r["job_id"] == job] if path.is_file() else []
    wait_for(recorded, 180, "the job to record itself in jobs.json", 0.5)
    dry = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", *TINY, "--dry-run")
    assert dry.returncode == 0 and f"2d fold 0: job {job} is RUNNING" in " ".join(dry.stdout.split()), dry.stdout
    assert "# ===== fold" not in dry.stdout

    wait_for(lambda: (folder / "checkpoint_latest.pth").is_file(), 300, "the first checkpoint", 0.1)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    wait_for(lambda: job_state(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 420, "the job to end", 1)
    state = job_state(job)
    text = " ".join(log.read_text().split())
    assert state["JobState"] == "COMPLETED" and int(state["Restarts"]) == 1, (state, text[-3000:])
    assert "received SIGUSR1" in text and "after SIGUSR1: requeueing" in text and "resuming" in text
    assert f"recorded job {job} (2d fold 0)" in text
    assert len(recorded()) == 1 and recorded()[0]["array"] is False
    assert (folder / "checkpoint_final.pth").is_file()
    assert text.count("staged the preprocessed data (nnUNetPlans_2d) on node-local disk") == 2
    assert "copied" in text and "an identical copy was there" in text
    debug = json.loads((folder / "debug.json").read_text())
    assert debug["preprocessed_dataset_folder"].startswith(str(scratch / "ibsr-nnunet-staged"))


def test_a_baseline_campaign_trains_views_and_fuses_them_in_the_final_job(cluster, planned, tmp_path):
    ws = copy_workspace(planned, tmp_path / "baselines")
    args = ["submit", "--configs", "", "--baselines", "unet2d__dice_ce,unet2d_axial__dice_ce", "--baseline-ensemble",
            *[a if a != "4" else "2" for a in TINY]]
    submitted = cli(ws.root, *args)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    assert [(j["kind"], j["name"]) for j in jobs] == [("baseline", "unet2d__dice_ce"),
                                                      ("baseline", "unet2d_axial__dice_ce"), ("final", "final")]
    final = jobs[-1]["job_id"]
    wait_for(lambda: job_state(final).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 600, "the final job", 2)
    log = ws.slurm / "logs" / f"final_{final}.out"
    assert job_state(final)["JobState"] == "COMPLETED", log.read_text() if log.exists() else ""
    assert "ensemble of the baselines unet2d__dice_ce,unet2d_axial__dice_ce" in log.read_text()
    orientation = json.loads((ws.baselines / "unet2d_axial__dice_ce" / "orientation.json").read_text())
    assert (orientation["view"], orientation["slicing_axis"]) == ("axial", 2)
    ranked = {line.split(",")[1] for line in ws.leaderboard.read_text().splitlines()[1:]}
    assert ranked == {"unet2d__dice_ce", "unet2d_axial__dice_ce", "baseline_ensemble"}
    definition = json.loads((ws.baselines / "baseline_ensemble" / "ensemble.json").read_text())
    assert definition["members"] == ["unet2d__dice_ce", "unet2d_axial__dice_ce"] and definition["vote"] == "mean"
