"""`status`: one row per recorded configuration × fold, baseline and the final job, and when the campaign ends."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional

from ..core.errors import InputError
from ..core.exitcodes import EXIT_LOCKED, EXIT_STALLED
from ..core.provenance import dataset_fingerprint, staleness
from ..core.runlog import STALL_FIX, median, utc
from ..core.workspace import Workspace
from ..models.protocol import Progress
from .eta import History, campaign_eta, final_job_seconds, job_eta, summarize
from .jobs import job_label, job_progress, load_jobs, state_key
from .slurm import JobState, Runner, query_states

STALLED_REASON = (f"stalled: two runs in a row were stopped by the time-limit warning before finishing an epoch "
                  f"(exit {EXIT_STALLED}); {STALL_FIX}")


@dataclass
class StatusRow:
    kind: str  # "fold" | "baseline" | "final"
    name: str  # a fold's configuration, with its preset unless default ("resenc-m 2d"); a baseline's name
    fold: Optional[int]
    job_id: Optional[str]
    state: str
    reason: str
    restarts: Optional[int]
    epochs_done: Optional[int] = None
    epochs_total: Optional[int] = None
    pseudo_dice: Optional[float] = None
    val_loss: Optional[float] = None
    validation_dice: Optional[float] = None
    finished: bool = False
    stale: bool = False  # made from another dataset than the workspace's: not finished, whatever its files say
    # from the folder's runs.jsonl (core/runlog.py), kept after SLURM has forgotten the job
    end_reasons: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # where its runs ran, in order (SLURM's node name, else the host)
    epochs_redone: int = 0
    gpu_hours: float = 0.0
    stalled: bool = False
    seconds_per_epoch: Optional[float] = None  # median of the recent epochs on the current device
    eta_seconds: Optional[float] = None
    eta_utc: Optional[str] = None
    eta_from: str = "own"  # "own": its own epochs; "siblings": the measured folds of its configuration
    running: bool = False


@dataclass
class CampaignStatus:
    rows: list[StatusRow]
    slurm_answered: bool
    parallel: int = 1  # jobs that can run at once: those running now, else the arrays' throttles
    final_seconds: Optional[float] = None  # the final job's expected time
    eta_seconds: Optional[float] = None  # until the final job is done; None when a job cannot finish or is unknown
    eta_utc: Optional[str] = None
    eta_note: str = ""


def _reason(state: Optional[JobState]) -> str:
    if state is None:
        return ""
    if state.exit_code.split(":")[0] == str(EXIT_LOCKED):
        return f"another writer held the lock (exit {EXIT_LOCKED}; the job log names it)"
    return state.reason


def _fingerprint(ws: Workspace) -> Optional[str]:
    try:
        return dataset_fingerprint(ws)
    except InputError:  # no converted dataset: nothing can be current
        return None


def _latest_records(jobs: list[dict]) -> list[tuple[tuple[str, str, Optional[int]], dict]]:
    """The newest record of each fold, baseline and the final job, in table order."""
    latest: dict[tuple[str, str, Optional[int]], dict] = {}
    for record in jobs:
        if record["kind"] == "fold":
            for fold in record["folds"]:
                latest[("fold", job_label(record), fold)] = record
        else:
            latest[(record["kind"], record["name"], None)] = record
    order = {"fold": 0, "baseline": 1, "final": 2}
    return sorted(latest.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] or 0))


def _add_history(row: StatusRow, progress: Progress, state: Optional[JobState], now: float) -> History:
    """Restarts, end reasons, redone work, GPU-hours, stall and ETA from the run history and the epoch times."""
    history = summarize(progress.runs, now)
    row.restarts = max(history.restarts, state.restarts if state else 0)
    row.end_reasons, row.epochs_redone = history.end_reasons, history.epochs_redone
    row.nodes = list(dict.fromkeys(str(node) for run in progress.runs
                                   if (node := run.start.get("slurm_node") or run.start.get("host"))))
    exited_stalled = state is not None and state.exit_code.split(":")[0] == str(EXIT_STALLED)
    row.gpu_hours = round(history.gpu_hours, 4)
    row.stalled = (history.stalled or exited_stalled) and not row.finished
    # an open last run is running unless SLURM says otherwise (it answered and the job is not running)
    row.running = history.running and (state is None or state.state == "RUNNING") and not row.finished
    if row.stalled:
        row.reason = STALLED_REASON
    spe = median(progress.epoch_seconds)
    row.seconds_per_epoch = None if spe is None else round(spe, 3)
    if row.finished:
        row.eta_seconds = 0.0
    elif not row.stalled and row.epochs_total is not None:
        eta = job_eta(history, spe, row.epochs_total - (row.epochs_done or 0), running=row.running)
        row.eta_seconds = None if eta is None else round(eta, 1)
    row.eta_utc = utc(now + row.eta_seconds) if row.eta_seconds is not None else None
    return history


def _borrow_etas(rows: list[StatusRow], histories: dict[int, History], now: float) -> None:
    """A job that has not finished an epoch yet (a fold still queued) gets the median ETA its measured siblings
    (the other folds of its configuration) would give for its epochs left."""
    for row in rows:
        if row.eta_seconds is not None or row.stalled or row.epochs_total is None or row.kind != "fold":
            continue
        left = row.epochs_total - (row.epochs_done or 0)
        etas = [job_eta(histories[id(other)], other.seconds_per_epoch, left, running=row.running)
                for other in rows if other.kind == row.kind and other.name == row.name
                and other.seconds_per_epoch is not None and id(other) in histories]
        if etas:
            row.eta_seconds = round(median(etas), 1)
            row.eta_utc = utc(now + row.eta_seconds)
            row.eta_from = "siblings"


def _parallel(jobs: list[dict], rows: list[StatusRow]) -> int:
    """Jobs that can run at once: those running now, else the recorded array throttles (array_parallel), else 1."""
    running = sum(1 for r in rows if r.kind != "final" and r.state == "RUNNING")
    if running:
        return running
    throttles = [r.get("array_parallel") for r in jobs if r["kind"] == "fold"]
    if throttles and all(isinstance(t, int) and t > 0 for t in throttles):
        return sum(throttles) + sum(1 for r in rows if r.kind == "baseline" and not r.finished)
    return 1


def _campaign(report: CampaignStatus, ws: Workspace, jobs: list[dict], now: float) -> None:
    """The campaign's ETA: the unfinished jobs on the slots that can run at once, then the final job."""
    rows = report.rows
    logs = sorted((ws.slurm / "logs").glob("final_*.out")) if (ws.slurm / "logs").is_dir() else []
    report.final_seconds = final_job_seconds([log.read_text(errors="replace") for log in logs])
    final = [r for r in rows if r.kind == "final"]
    if final and final[0].finished:
        report.eta_seconds = 0.0
    else:
        pending = [r for r in rows if r.kind != "final" and not r.finished]
        blocked = [r for r in pending if r.stalled or r.eta_seconds is None
                   or r.state in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")]
        report.parallel = _parallel(jobs, rows)
        if blocked:
            names = ", ".join(f"{r.name}" + (f" fold {r.fold}" if r.fold is not None else "") for r in blocked)
            report.eta_note = f"unknown until {names} can finish (stalled, failed or no epoch measured yet)"
        else:
            report.eta_seconds = round(campaign_eta([(r.eta_seconds, r.running) for r in pending],
                                                    report.parallel, report.final_seconds), 1)
    report.eta_utc = utc(now + report.eta_seconds) if report.eta_seconds is not None else None


def status(ws: Workspace, runner: Runner = subprocess.run, *, now: Optional[float] = None) -> CampaignStatus:
    """One row per recorded configuration × fold and baseline, and the final job; whether SLURM answered; and
    when the campaign is expected to end, as seen at `now` (default: the current time)."""
    now = time.time() if now is None else now
    states = query_states(runner)
    answered = states is not None
    states = states or {}
    fingerprint = _fingerprint(ws)
    rows: list[StatusRow] = []
    histories: dict[int, History] = {}
    jobs = load_jobs(ws)
    for (kind, name, fold), record in _latest_records(jobs):
        key = state_key(record, fold)
        state = states.get(key)
        row = StatusRow(kind, name, fold, key, state.state if state else "unknown", _reason(state),
                        state.restarts if state else None)
        if kind in ("fold", "baseline"):
            progress = job_progress(ws, record, fold)
            row.stale = fingerprint is None or staleness(progress.folder, fingerprint) is not None
            row.epochs_done, row.epochs_total = progress.epochs_done, record["epochs"]
            row.pseudo_dice, row.val_loss, row.validation_dice = (progress.pseudo_dice, progress.val_loss,
                                                                   progress.validation_dice)
            completed = kind == "baseline" and state is not None and state.state == "COMPLETED"
            row.finished = (progress.finished or completed) and not row.stale
            histories[id(row)] = _add_history(row, progress, state, now)
        else:
            row.finished = ((state is not None and state.state == "COMPLETED")
                            or (state is None and ws.leaderboard.is_file()))
        rows.append(row)
    _borrow_etas(rows, histories, now)
    report = CampaignStatus(rows, answered)
    if rows:
        _campaign(report, ws, jobs, now)
    return report
