"""`status`: one row per recorded configuration × fold, baseline and the final job."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Optional

from ..core.workspace import Workspace
from ..nnunet.paths import fold_folder
from .jobs import load_jobs
from .progress import baseline_progress, fold_progress
from .slurm import Runner, query_states


@dataclass
class StatusRow:
    kind: str  # "fold" | "baseline" | "final"
    name: str
    fold: Optional[int]
    job_id: Optional[str]
    state: str
    reason: str
    restarts: Optional[int]
    epochs_done: Optional[int]
    epochs_total: Optional[int]
    pseudo_dice: Optional[float]
    val_loss: Optional[float]
    validation_dice: Optional[float]
    finished: bool


def status(ws: Workspace, run: Runner = subprocess.run) -> tuple[list[StatusRow], bool]:
    """One row per recorded configuration × fold and baseline, and the final job; and whether SLURM answered."""
    jobs = load_jobs(ws)
    states = query_states(run)
    answered = states is not None
    states = states or {}
    rows: list[StatusRow] = []
    latest: dict[tuple[str, str, Optional[int]], dict] = {}
    for record in jobs:
        if record["kind"] == "fold":
            for fold in record["folds"]:
                latest[("fold", record["name"], fold)] = record
        else:
            latest[(record["kind"], record["name"], None)] = record
    order = {"fold": 0, "baseline": 1, "final": 2}
    for (kind, name, fold), record in sorted(latest.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] or 0)):
        key = f"{record['job_id']}_{fold}" if fold is not None else record["job_id"]
        state = states.get(key) or (states.get(record["job_id"]) if fold is None else None)
        if kind == "fold":
            progress = fold_progress(fold_folder(ws, name, fold, record["trainer"]), record["epochs"])
            finished = progress.finished
            rows.append(StatusRow(kind, name, fold, key, state.state if state else "unknown",
                                  state.reason if state else "", state.restarts if state else None,
                                  progress.epochs_done, record["epochs"], progress.pseudo_dice, progress.val_loss,
                                  progress.validation_dice, finished))
        elif kind == "baseline":
            progress = baseline_progress(ws, name)
            finished = progress.finished or (state is not None and state.state == "COMPLETED")
            rows.append(StatusRow(kind, name, None, key, state.state if state else "unknown",
                                  state.reason if state else "", state.restarts if state else None,
                                  progress.epochs_done, record["epochs"], progress.pseudo_dice, progress.val_loss,
                                  progress.validation_dice, finished))
        else:
            finished = (state is not None and state.state == "COMPLETED") or (state is None and ws.leaderboard.is_file())
            rows.append(StatusRow(kind, name, None, key, state.state if state else "unknown",
                                  state.reason if state else "", state.restarts if state else None,
                                  None, None, None, None, None, finished))
    return rows, answered
