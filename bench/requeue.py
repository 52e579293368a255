"""Requeue latency and epochs lost: an nnU-Net fold job on the local SLURM cluster, interrupted again and again.

    python bench/requeue.py [--rounds 6] [--keep]
    python bench/requeue.py --time-limited [--slots 3] [--time 2] [--grace 60] [--keep]

--time-limited: a fold with a real `--time` limit, stopped by SLURM's own USR1 warning `--grace` seconds before
it; per slot, the seconds spent on useful (completed) epochs, as a share of the slot and of the run; per requeue,
its overhead from the last completed epoch of one run to the first epoch of the next: the lost part-epoch (+ save
and exit), SLURM's requeue, and the next run's start-up and loading (Python, torch, nnU-Net, checkpoint, data
workers), in seconds and as a share of a 24-hour slot (one requeue per slot).
Measured 2026-11-30, --time 2 --grace 60, 3 slots, on the quiet 2-core AMD EPYC machine: USR1 came 49-53 s into
each run (SLURM checks limits on its own tick, so it comes early); each slot gave 13.0-16.6 s of epochs (median
15.0 s: 12 % of the 120 s slot, 28 % of the run); overhead per requeue median 22.4 s (lost part-epoch + exit 4.6 s,
requeue 7.0 s, start-up + loading 11.2 s) = 0.026 % of a 24-hour slot. Under heavy load (a test suite and other
benches beside it) start-up + loading took 45-62 s, the overhead 72-85 s, and slots 2-3 finished no epoch.

Starts slurm/local-cluster.sh (unless a cluster runs), plans a phantom workspace, submits one 2d fold with
`ibsr-nnunet submit` (CPU, 1 CPU per job) and interrupts it mid-training, alternating the two paths:
  usr1    `scancel --batch --signal=USR1` (what `--signal=B:USR1@grace` delivers before the time limit): the script's
          trap forwards it, `train` saves and exits 75, the script runs `scontrol requeue`;
  requeue `scontrol requeue` from outside (what preemption does): SIGTERM to every process of the job, `train`
          saves within KillWait (5 s here) and the job is requeued by SLURM.
Per round it reports: seconds from the signal to the job RUNNING again (scontrol polled every 50 ms), seconds
until training resumed (the rerun's `resuming ... at epoch N` line: Python + torch + nnU-Net start-up), and whole
epochs lost = epochs completed when the signal came minus the epoch the rerun resumed at (the epoch in progress is
always redone: that part is < 1 epoch).

Measured 2026-11-28 on the quiet 2-core CPU machine, same settings, 6 rounds:
  usr1      1.4 s              6.6 s (6.6, 7.6, 6.6)      10.4 s (10.2-11.2)         0 (of 3 rounds)
  requeue   0.0 s              7.6 s (7.6, 7.7, 7.5)      11.3 s (11.3-11.3)         0 (of 3 rounds)
Measured earlier the same day on the 2-core CPU machine, shared with other test runs (SLURM 22.05.8, cred_expire=5,
KillWait=5, bf_interval=1, sched_interval=1), 2d phantom fold, 4 iterations per epoch, 6 rounds, 3 min 5 s in all:
  path      signal->requeued   signal->RUNNING again      signal->training resumed   whole epochs lost
  usr1      3.7 s (2.2-4.0)    9.8 s (8.1, 9.8, 10.1)     16.3 s (13.7-20.2)         0 (of 3 rounds)
  requeue   0.0 s              10.4 s (9.5, 10.4, 10.6)   16.8 s (15.5-19.7)         0 (of 3 rounds)
  - usr1: 2-4 s for `train` to finish its iteration, save and exit 75, then ~6 s: the requeued job waits
    cred_expire (5 s, SLURM's minimum) and the next scheduling pass.
  - requeue: SLURM requeues at once, but the job counts as running until its processes end (the trainer saves on
    SIGTERM, ~4 s), then the same ~6 s.
  - training resumed: + ~6-10 s of Python, torch and nnU-Net start-up in the new run (loaded machine).
  - every rerun resumed at the epoch in progress at the signal (epoch done at signal = resume epoch): no whole
    epoch lost; the partial epoch in progress is redone (< 1 epoch).
  Before `SchedulerParameters=bf_interval=1,sched_interval=1` a requeued job waited for the 30 s backfill tick:
  22 s from signal to RUNNING.
Targets: ≤ 10 s from signal to running again (the cluster's cred_expire=5; SLURM's default 120 s would dominate),
≤ 1 epoch lost.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ibsr_nnunet.core.workspace import Workspace  # noqa: E402
from ibsr_nnunet.data.convert import ConvertOptions, convert  # noqa: E402
from ibsr_nnunet.data.phantom import write_phantoms  # noqa: E402
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name  # noqa: E402

CLUSTER = REPO / "slurm" / "local-cluster.sh"
EPOCHS, ITERATIONS = 500, 4


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws), *args],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    if result.returncode != 0:
        raise SystemExit(f"ibsr-nnunet {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def job(job_id: str) -> dict[str, str]:
    line = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", line))


def completed_epochs(folder: Path) -> int:
    """Epochs finished so far, over every training log of the fold (an epoch counts once its losses are logged)."""
    from ibsr_nnunet.models.nnunet import fold_curve

    done = fold_curve(folder).dropna(subset=["train_loss"])
    return int(done["epoch"].max()) + 1 if len(done) else 0


def resumes(log: Path) -> list[int]:
    return [int(n) for n in re.findall(r"resuming \S+ 2d fold 0 from checkpoint_\w+\.pth at epoch (\d+)",
                                       " ".join(log.read_text().split()))] if log.exists() else []


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


JOB_LOG_LINE = re.compile(r"^\[ibsr-nnunet (\S+)Z\] job \S+(?: \(\S+\))? restart (\d+): (.*)$", re.MULTILINE)
NNUNET_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): (Epoch \d+|Epoch time: ([\d.]+) s)\s*$",
                         re.MULTILINE)


def run_events(job_log: str) -> dict[int, dict[str, float]]:
    """Per run (restart count): start, USR1 and end (requeue) times, epoch seconds, from the job log (UTC)."""
    runs: dict[int, dict[str, float]] = {}
    for stamp, restart, message in JOB_LOG_LINE.findall(job_log):
        t = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
        run = runs.setdefault(int(restart), {})
        if ": train " in message:
            run.setdefault("start", t)
        elif "received SIGUSR1" in message:
            run.setdefault("usr1", t)
        elif "requeueing" in message or "not requeued" in message:
            run["end"] = t
    return runs


def epochs_of(training_log: Path) -> dict[str, float]:
    """First epoch start, last completed epoch end, and the seconds of completed epochs in one run's nnU-Net log."""
    starts, ends, useful = [], [], 0.0
    for stamp, what, seconds in NNUNET_LINE.findall(training_log.read_text()):
        t = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S")) + float("0." + stamp.split(".")[1])
        if seconds:
            ends.append(t)
            useful += float(seconds)
        else:
            starts.append(t)
    return {"first_epoch": starts[0] if starts else float("nan"), "last_end": ends[-1] if ends else float("nan"),
            "useful": useful, "epochs": len(ends)}


def time_limited(ws: Path, options) -> list[dict]:
    """Submit one 2d fold with a real --time; let SLURM warn, save and requeue it `slots` times; measure."""
    limit = options.time * 60
    cli(ws, "submit", "--configs", "2d", "--folds", "0", "--epochs", "1000", "--iterations-per-epoch",
        str(ITERATIONS), "--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1", "--time", str(options.time),
        "--signal-grace", str(options.grace))
    record = json.loads((ws / "slurm" / "jobs.json").read_text())["jobs"][0]
    fold_job = f"{record['job_id']}_0"
    log = ws / "slurm" / "logs" / f"nnunet-2d_{record['job_id']}_0.out"
    try:
        wait_for(lambda: int(job(fold_job).get("Restarts", "0")) >= options.slots
                 and job(fold_job).get("JobState") == "RUNNING" and len(resumes(log)) >= options.slots,
                 (limit + 120) * (options.slots + 1), f"{options.slots} time-limited slots", 1)
        time.sleep(20)  # the last run reaches its first epochs
    finally:
        for other in json.loads((ws / "slurm" / "jobs.json").read_text())["jobs"]:  # the fold and the final job
            subprocess.run(["scancel", other["job_id"]], capture_output=True)
    runs = run_events(log.read_text())
    folder = fold_folder(Workspace.open(ws), "2d", 0, trainer=trainer_name(1000, ITERATIONS))
    trained = [epochs_of(p) for p in sorted(folder.glob("training_log_*.txt"))]
    slots = []
    for k in range(options.slots):
        run, epochs, following = runs[k], trained[k], trained[k + 1]
        # the part of the run after its last completed epoch is lost (redone); with no epoch completed, from the
        # start of the epoch it was in (the time before that is start-up, counted with the previous requeue)
        useful_until = next((t for t in (epochs["last_end"], epochs["first_epoch"]) if t == t), run["end"])
        lost = run["end"] - useful_until
        requeue = runs[k + 1]["start"] - run["end"]
        startup = following["first_epoch"] - runs[k + 1]["start"]
        overhead = lost + requeue + startup
        slots.append({
            "slot": k, "epochs": epochs["epochs"], "useful_s": round(epochs["useful"], 1),
            "useful_share_of_slot": round(epochs["useful"] / limit, 3), "run_s": run["end"] - run["start"],
            "useful_share_of_run": round(epochs["useful"] / (run["end"] - run["start"]), 3),
            "usr1_after_s": run.get("usr1", float("nan")) - run["start"],
            "lost_part_epoch_and_exit_s": round(lost, 1), "requeue_s": requeue,
            "next_startup_loading_s": round(startup, 1),
            "overhead_s": round(overhead, 1), "overhead_share_of_24h": round(overhead / 86400, 5),
        })
        print(json.dumps(slots[-1]), flush=True)
    overheads = [s["overhead_s"] for s in slots]
    print(f"\n--time {options.time} min, --signal-grace {options.grace} s, {len(slots)} slots: useful epochs "
          f"{statistics.median([s['useful_s'] for s in slots]):.1f} s per slot (median; share of the "
          f"{limit} s slot {statistics.median([s['useful_share_of_slot'] for s in slots]):.2f}, of the run "
          f"{statistics.median([s['useful_share_of_run'] for s in slots]):.2f}); overhead per requeue median "
          f"{statistics.median(overheads):.1f} s (lost part-epoch + exit "
          f"{statistics.median([s['lost_part_epoch_and_exit_s'] for s in slots]):.1f} s, requeue "
          f"{statistics.median([s['requeue_s'] for s in slots]):.1f} s, start-up + loading "
          f"{statistics.median([s['next_startup_loading_s'] for s in slots]):.1f} s) = "
          f"{100 * statistics.median(overheads) / 86400:.3f} % of a 24-hour slot")
    return slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--time-limited", action="store_true", help="measure slots of a real --time limit instead")
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--time", type=int, default=2, help="--time in minutes (with --time-limited)")
    parser.add_argument("--grace", type=int, default=60, help="--signal-grace in seconds (with --time-limited)")
    parser.add_argument("--keep", action="store_true", help="keep the workspace and leave the cluster running")
    options = parser.parse_args()

    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).stdout
    started = "slurmctld: running" not in status
    subprocess.run([str(CLUSTER), "start"], check=True, capture_output=True)
    os.environ.setdefault("SLURM_CONF", os.environ.get("IBSR_SLURM_BASE", "/tmp/ibsr-slurm-local") + "/etc/slurm.conf")
    root = Path(tempfile.mkdtemp(prefix="bench-requeue-"))
    job_ids: list[str] = []
    try:
        write_phantoms(root / "source", 8, layout="misa", size="small", seed=0)
        ws = Workspace.open(root / "ws")
        convert(root / "source", ws, ConvertOptions(jobs=2))
        cli(ws.root, "plan", "--configs", "2d", "--jobs", "2")
        if options.time_limited:
            time_limited(ws.root, options)
            return
        cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", str(EPOCHS), "--iterations-per-epoch",
            str(ITERATIONS), "--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1")
        records = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
        job_ids = [r["job_id"] for r in records]
        fold_job = f"{records[0]['job_id']}_0"
        log = ws.slurm / "logs" / f"nnunet-2d_{records[0]['job_id']}_0.out"
        folder = fold_folder(ws, "2d", 0, trainer=trainer_name(EPOCHS, ITERATIONS))

        results = []
        for round_ in range(options.rounds):
            kind = "usr1" if round_ % 2 == 0 else "requeue"
            restarts = int(job(fold_job).get("Restarts", "0"))
            # this run must be training and have completed at least one epoch of its own
            base = completed_epochs(folder)
            wait_for(lambda: job(fold_job).get("JobState") == "RUNNING" and len(resumes(log)) >= round_
                     and completed_epochs(folder) >= base + 1, 300, f"round {round_}: an epoch of training")
            time.sleep(1.0)  # land mid-epoch
            done_at_signal = completed_epochs(folder)
            signal_time = time.time()
            if kind == "usr1":
                subprocess.run(["scancel", "--batch", "--signal=USR1", fold_job], check=True)
            else:
                subprocess.run(["scontrol", "requeue", fold_job], check=True)
            # left its run: the job is requeued (PENDING, waiting cred_expire); then a new run starts
            wait_for(lambda: job(fold_job).get("JobState") not in ("RUNNING", None), 120,
                     f"round {round_}: requeued", 0.02)
            requeued = time.time() - signal_time

            def running_again() -> bool:
                state = job(fold_job)
                start = state.get("StartTime", "")
                started = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) if start[:2] == "20" else 0
                return (state.get("JobState") == "RUNNING" and int(state.get("Restarts", 0)) > restarts
                        and started >= int(signal_time))
            wait_for(running_again, 120, f"round {round_}: running again", 0.02)
            running = time.time() - signal_time
            wait_for(lambda: len(resumes(log)) > round_, 120, f"round {round_}: resumed", 0.1)
            resumed = time.time() - signal_time
            epoch = resumes(log)[-1]
            results.append({"round": round_, "path": kind, "signal_to_requeued_s": round(requeued, 2),
                            "signal_to_running_s": round(running, 2), "signal_to_training_resumed_s": round(resumed, 2),
                            "epochs_done_at_signal": done_at_signal, "resumed_at_epoch": epoch,
                            "whole_epochs_lost": max(0, done_at_signal - epoch)})
            print(json.dumps(results[-1]), flush=True)

        print()
        for kind in ("usr1", "requeue"):
            mine = [r for r in results if r["path"] == kind]
            if not mine:
                continue
            left = [r["signal_to_requeued_s"] for r in mine]
            runs = [r["signal_to_running_s"] for r in mine]
            resumed = [r["signal_to_training_resumed_s"] for r in mine]
            lost = [r["whole_epochs_lost"] for r in mine]
            print(f"{kind:8s} n={len(mine)}  signal->requeued median {statistics.median(left):.1f} s  "
                  f"signal->RUNNING median {statistics.median(runs):.1f} s "
                  f"(max {max(runs):.1f})  signal->training resumed median {statistics.median(resumed):.1f} s "
                  f"(max {max(resumed):.1f})  whole epochs lost max {max(lost)}")
    finally:
        for job_id in job_ids:
            subprocess.run(["scancel", job_id], capture_output=True)
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
            if started:
                subprocess.run([str(CLUSTER), "stop"], capture_output=True)


if __name__ == "__main__":
    main()
