"""`status`: one row per recorded configuration × fold, baseline and the final job."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Optional

from ..core.errors import InputError
from ..core.exitcodes import EXIT_LOCKED
from ..core.provenance import dataset_fingerprint, staleness
from ..core.workspace import Workspace
from ..nnunet.paths import fold_folder
from .jobs import load_jobs
from .progress import baseline_progress, fold_progress
from .slurm import JobState, Runner, query_states


@dataclass
class StatusRow:
    kind: str  # "fold" | "baseline" | "final"
    name: str
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
                latest[("fold", record["name"], fold)] = record
        else:
            latest[(record["kind"], record["name"], None)] = record
    order = {"fold": 0, "baseline": 1, "final": 2}
    return sorted(latest.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] or 0))


def status(ws: Workspace, run: Runner = subprocess.run) -> tuple[list[StatusRow], bool]:
    """One row per recorded configuration × fold and baseline, and the final job; and whether SLURM answered."""
    states = query_states(run)
    answered = states is not None
    states = states or {}
    fingerprint = _fingerprint(ws)
    rows: list[StatusRow] = []
    for (kind, name, fold), record in _latest_records(load_jobs(ws)):
        key = f"{record['job_id']}_{fold}" if fold is not None else record["job_id"]
        state = states.get(key) or (states.get(record["job_id"]) if fold is None else None)
        row = StatusRow(kind, name, fold, key, state.state if state else "unknown", _reason(state),
                        state.restarts if state else None)
        if kind in ("fold", "baseline"):
            folder = fold_folder(ws, name, fold, trainer=record["trainer"]) if kind == "fold" else ws.baselines / name
            progress = fold_progress(folder, record["epochs"]) if kind == "fold" else baseline_progress(ws, name)
            row.stale = fingerprint is None or staleness(folder, fingerprint) is not None
            row.epochs_done, row.epochs_total = progress.epochs_done, record["epochs"]
            row.pseudo_dice, row.val_loss, row.validation_dice = (progress.pseudo_dice, progress.val_loss,
                                                                   progress.validation_dice)
            completed = kind == "baseline" and state is not None and state.state == "COMPLETED"
            row.finished = (progress.finished or completed) and not row.stale
        else:
            row.finished = (state is not None and state.state == "COMPLETED") or (state is None and ws.leaderboard.is_file())
        rows.append(row)
    return rows, answered
