"""Losing a node mid-fold: seconds from the kill to the requeued run's first finished epoch, on a local 3-node cluster.

    python bench/node_loss.py [--rounds 2] [--keep]

Starts its own cluster (slurm/local-cluster.sh, IBSR_SLURM_NODES=3, one CPU per node, base /tmp/ibsr-slurm-bench,
port 8817), plans a phantom workspace, and per round submits one 2d fold (CPU, 20 epochs × 4 iterations), waits for
its first checkpoint, and `kill-node`s the node it runs on. It reports, per round:
  detection   kill -> the controller marks the node DOWN (SlurmdTimeout=10 here; a real cluster's default is 300 s)
  hold        DOWN -> the job RUNNING again on another node (SLURM's requeue and the next scheduling pass; the hold
              before a requeued job may start is cred_expire, 5 s here, 120 s by SLURM's default)
  start-up    RUNNING -> the rerun's `resuming ... at epoch N` (Python, torch, nnU-Net, the checkpoint)
  loading     resumed -> its first finished epoch (data workers, the epoch itself)
  redone      epochs the dead run had finished that the rerun trains again (from runs.jsonl)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from requeue import wait_for

from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import fold_folder

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local-cluster.sh"
BASE, PORT = "/tmp/ibsr-slurm-bench", "8817"
EPOCHS, ITERATIONS = 20, 4
ENV = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin", "IBSR_SLURM_BASE": BASE,
       "IBSR_SLURM_PORT": PORT, "IBSR_SLURM_NODES": "3", "IBSR_SLURM_CPUS": "3", "IBSR_SLURM_GPUS": "0",
       "IBSR_SLURM_CLEAN": "1", "SLURM_CONF": f"{BASE}/etc/slurm.conf", "COLUMNS": "250"}


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=ENV, timeout=900)
    if check and done.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws), *args)


def job(job_id: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", run("scontrol", "-o", "show", "job", job_id, check=False).stdout))


def node_state(name: str) -> str:
    return run("sinfo", "-h", "-N", "-n", name, "-o", "%T", check=False).stdout.split("\n")[0].strip()


def runs(folder: Path) -> list[dict]:
    path = folder / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def finished_epoch_times(log: Path) -> list[float]:
    """The wall times (epoch seconds) at which the training log recorded an epoch's end."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): Epoch time", log.read_text(), re.MULTILINE)
    return [datetime.fromisoformat(s).timestamp() for s in stamps]


def one_round(planned: Path, work: Path, index: int) -> dict:
    ws = work / f"round{index}"
    shutil.copytree(planned, ws, symlinks=True)
    cli(ws, "submit", "--configs", "2d", "--folds", "0", "--epochs", str(EPOCHS), "--iterations-per-epoch",
        str(ITERATIONS), "--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1", "--signal-grace", "300")
    record = json.loads((ws / "slurm" / "jobs.json").read_text())["jobs"][0]
    task = f"{record['job_id']}_0"
    folder = fold_folder(Workspace.open(ws), "2d", 0, trainer=record["trainer"])
    wait_for(lambda: (folder / "checkpoint_latest.pth").is_file(), 600, "the first checkpoint")
    dead = next(line for line in runs(folder) if line["event"] == "start")["slurm_node"]
    killed = time.time()
    run(str(SCRIPT), "kill-node", dead)
    down = wait_for(lambda: "down" in node_state(dead) and time.time(), 600, f"{dead} to go down")
    running = wait_for(lambda: (s := job(task)).get("JobState") == "RUNNING" and s.get("Restarts") == "1"
                       and time.time(), 600, "the fold to run again")
    logs = sorted(folder.glob("training_log_*.txt"))
    rerun_log = wait_for(lambda: (found := sorted(folder.glob("training_log_*.txt"))) and len(found) > len(logs)
                         and found[-1], 600, "the rerun's training log")
    first_epoch = wait_for(lambda: finished_epoch_times(rerun_log)[:1], 600, "the rerun's first epoch")[0]
    start = [line for line in runs(folder) if line["event"] == "start"][-1]
    resumed = datetime.fromisoformat(re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+):", rerun_log.read_text(),
                                               re.MULTILINE)[1]).timestamp()
    run("scancel", record["job_id"], check=False)
    return {"node": f"{dead} -> {start['slurm_node']}", "detection": down - killed, "hold": running - down,
            "start-up": resumed - running, "loading": first_epoch - resumed, "total": first_epoch - killed,
            "redone": start["epochs_redone"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the workspaces and leave the cluster running")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ibsr-node-loss-"))
    run(str(SCRIPT), "stop", check=False)
    shutil.rmtree(BASE, ignore_errors=True)
    run(str(SCRIPT), "start")
    try:
        planned = work / "planned"
        run(sys.executable, "-m", "ibsr_nnunet", "phantom", str(work / "source"), "--subjects", "8", "--layout",
            "misa", "--seed", "0")
        cli(planned, "convert", str(work / "source"), "--jobs", "2")
        cli(planned, "plan", "--configs", "2d", "--jobs", "2")
        rows = []
        for index in range(options.rounds):
            rows.append(one_round(planned, work, index))
            run(str(SCRIPT), "start")  # the dead node back, for the next round
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                  flush=True)
        print(f"\n{'round':<6}{'nodes':<12}" + "".join(f"{k:>11}" for k in
                                                  ("detection", "hold", "start-up", "loading", "total", "redone")))
        for index, row in enumerate(rows):
            print(f"{index:<6}{row['node']:<12}" + "".join(f"{row[k]:>10.1f}s" for k in
                                                       ("detection", "hold", "start-up", "loading", "total"))
                  + f"{row['redone']:>11}")
        median = statistics.median(r["total"] for r in rows)
        print(f"median kill -> first epoch {median:.1f} s; with a real cluster's SlurmdTimeout=300 the detection "
              f"alone becomes ~300-330 s")
    finally:
        if not options.keep:
            run(str(SCRIPT), "stop", check=False)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
