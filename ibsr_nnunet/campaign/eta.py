"""Restarts, redone work, GPU-hours and finishing times of folds, baselines and the campaign, from their run history.

A job's ETA is `seconds_per_epoch × epochs left + restart overhead × starts ahead`:
- seconds_per_epoch: the median of the recent finished epochs on the current device (read by each model's `progress`);
- restart overhead: what a run costs beyond its epochs, measured from the history: the median start-up beyond one
  epoch (from the run's start to its first finished epoch: loading, torch.compile when used) plus the median
  unsaved part-epoch that a run stopped by USR1/TERM leaves to be redone;
- starts ahead: ceil(epochs left / epochs per slot) when earlier runs ended at the time-limit warning (epochs per
  slot: their median), else one; one fewer while a run is going on.
The campaign's ETA places the unfinished jobs, running ones first, on as many slots as can run at once, then adds
the final job's expected time.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass, field
from typing import Optional

from ..core.runlog import Run, median, parse_utc, stalled

# ensemble + leaderboard when no final job has run yet to measure it: predicting IBSR18's held-out and test scans
# with 2d, 3d_fullres and their ensemble on one GPU
FINAL_JOB_SECONDS = 1800.0
FINAL_LOG_LINE = re.compile(r"^\[ibsr-nnunet (\S+)\] job \S+: (.*)$", re.MULTILINE)


@dataclass
class History:
    """What runs.jsonl says about one fold or baseline."""

    restarts: int = 0
    end_reasons: list[str] = field(default_factory=list)
    epochs_redone: int = 0
    gpu_hours: float = 0.0
    stalled: bool = False
    running: bool = False  # its last run has a start line and no end line (yet)
    startup_seconds: Optional[float] = None  # median, from run start to first finished epoch
    unsaved_seconds: Optional[float] = None  # median part-epoch lost by a run stopped by USR1/TERM
    slot_epochs: Optional[float] = None  # median epochs finished by a run that ended at the time-limit warning


def summarize(runs: list[Run], now: float) -> History:
    """The history of one folder's runs (an open last run counts as running until `now`)."""
    history = History(restarts=max(0, len(runs) - 1), stalled=stalled(runs))
    history.end_reasons = [run.reason for run in runs if run.reason]
    history.epochs_redone = sum(run.start.get("epochs_redone") or 0 for run in runs)
    history.running = bool(runs) and runs[-1].end is None
    gpu_seconds = 0.0
    for run in runs:
        seconds = run.seconds
        if seconds is None and run is runs[-1] and run.end is None and run.began is not None:
            seconds = max(0.0, now - run.began)
        if run.start.get("device") == "cuda" and seconds:
            gpu_seconds += seconds
    history.gpu_hours = gpu_seconds / 3600
    ended = [run for run in runs if run.end]
    history.startup_seconds = median([run.end.get("startup_seconds") for run in ended])
    history.unsaved_seconds = median([run.end.get("since_last_epoch_seconds") for run in ended
                                      if run.reason in ("usr1", "term") and not run.no_progress])
    history.slot_epochs = median([run.epoch_end - run.epoch_start for run in ended
                                  if run.reason == "usr1" and not run.no_progress])
    return history


def restart_overhead(history: History, seconds_per_epoch: Optional[float]) -> float:
    """Seconds a start costs beyond the epochs it trains (0 when the history has not measured it)."""
    startup = 0.0
    if history.startup_seconds is not None and seconds_per_epoch is not None:
        startup = max(0.0, history.startup_seconds - seconds_per_epoch)
    return startup + (history.unsaved_seconds or 0.0)


def starts_ahead(history: History, epochs_left: int, *, running: bool) -> int:
    """How many more runs must start before the job is done."""
    if epochs_left <= 0:
        return 0
    runs = math.ceil(epochs_left / history.slot_epochs) if history.slot_epochs else 1
    return max(0, runs - (1 if running else 0))


def job_eta(history: History, seconds_per_epoch: Optional[float], epochs_left: int, *,
            running: bool) -> Optional[float]:
    """Seconds until the job has trained all its epochs; None without a measured epoch."""
    if epochs_left <= 0:
        return 0.0
    if seconds_per_epoch is None:
        return None
    overhead = restart_overhead(history, seconds_per_epoch)
    return seconds_per_epoch * epochs_left + overhead * starts_ahead(history, epochs_left, running=running)


def campaign_eta(jobs: list[tuple[float, bool]], parallel: int, final_seconds: float) -> float:
    """Seconds until the final job is done: (eta, running now) of each unfinished job, placed running ones first
    and then in order on `parallel` slots, each job on the slot that frees first; then the final job."""
    slots = [0.0] * max(1, parallel)  # when each slot frees, as a heap
    for eta, _ in sorted(jobs, key=lambda job: not job[1]):  # stable: table order after the running ones
        heapq.heapreplace(slots, slots[0] + eta)
    return max(slots) + final_seconds


def final_job_seconds(logs: list[str]) -> float:
    """The final job's expected time: the median time from the first stamp to `finished` of its earlier logs
    (slurm/final.sbatch's `[ibsr-nnunet <UTC>] job N: ...` lines), else FINAL_JOB_SECONDS."""
    durations = []
    for text in logs:
        stamps = [(parse_utc(m[1]), m[2]) for m in FINAL_LOG_LINE.finditer(text)]
        done = [t for t, what in stamps if what.startswith("finished")]
        if stamps and done:
            durations.append(done[-1] - stamps[0][0])
    return median(durations) if durations else FINAL_JOB_SECONDS
