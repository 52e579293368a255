"""The campaign's job records, `<workspace>/slurm/jobs.json`: the one module that reads it, and appends to it under
its lock, atomically.

    {"jobs": [record, ...]}: one record per submitted job (kind "fold", "baseline" or "final", name (a fold's
    configuration), preset (a fold's nnU-Net plans preset; absent: default), job_id, folds, array, array_parallel,
    trainer, epochs, iterations, script, argv, submitted; by_hand for a fold sbatched by hand)"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json_object
from ..core.locks import Lock, LockedError, lock_path
from ..core.vocabulary import DEFAULT_PRESET, nnunet_model_name
from ..core.workspace import Workspace
from ..models.protocol import Progress, TrainingJob
from ..models.registry import load_model

JOBS_FILE = "jobs.json"
LOCK_WAIT_SECONDS = 60  # writers hold the lock for milliseconds: wait for it rather than fail


def jobs_file(ws: Workspace) -> Path:
    return ws.slurm / JOBS_FILE


def load_jobs(ws: Workspace) -> list[dict]:
    path = jobs_file(ws)
    fix = "move it away and run `ibsr-nnunet submit` again (check `squeue` for jobs it recorded first)"
    saved = read_json_object(path, fix, "the campaign's job records", missing_ok=True)
    if saved is None:
        return []
    jobs = saved.get("jobs")
    if not isinstance(jobs, list) or not all(isinstance(record, dict) for record in jobs):
        raise InputError(f"{path} holds no list of job records under \"jobs\"; {fix}.")
    return list(jobs)


def save_jobs(ws: Workspace, jobs: list[dict]) -> None:
    write_json(jobs_file(ws), {"jobs": jobs})


def _locked(ws: Workspace, command: str, say: Callable[[str], None]) -> Lock:
    """The jobs lock, waited for (a writer holds it for milliseconds; a dead one is taken over)."""
    deadline = time.time() + LOCK_WAIT_SECONDS
    while True:
        try:
            return Lock(lock_path(jobs_file(ws)), f"the job records {jobs_file(ws)}", command, say=say).acquire()
        except LockedError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def append_job(ws: Workspace, record: dict, *, say: Callable[[str], None] = print) -> list[dict]:
    """Add one record to jobs.json (reread under the lock, so concurrent writers never lose one); all records."""
    ws.slurm.mkdir(parents=True, exist_ok=True)
    lock = _locked(ws, "ibsr-nnunet submit", say)
    try:
        jobs = load_jobs(ws)
        jobs.append(record)
        save_jobs(ws, jobs)
        return jobs
    finally:
        lock.release()


def record_preset(record: dict) -> str:
    """The nnU-Net plans preset of a fold record (records written before presets existed are the default's)."""
    return str(record.get("preset") or DEFAULT_PRESET)


def job_label(record: dict) -> str:
    """A fold job's configuration, with its preset unless it is the default ('2d', 'resenc-m 2d'); a baseline's
    name."""
    if record["kind"] != "fold" or record_preset(record) == DEFAULT_PRESET:
        return record["name"]
    return f"{record_preset(record)} {record['name']}"


def state_key(record: dict, fold: Optional[int]) -> str:
    """The key of a record's job (or of one fold's array task) in `slurm.query_states`' answer."""
    if fold is not None and record.get("array", True):
        return f"{record['job_id']}_{fold}"
    return str(record["job_id"])


def job_progress(ws: Workspace, record: dict, fold: Optional[int] = None) -> Progress:
    """Where a recorded fold (`fold` of the record's configuration) or baseline job stands, as its model reads it."""
    try:
        name = nnunet_model_name(record["name"], record_preset(record)) if record["kind"] == "fold" else record["name"]
    except KeyError:
        name = record["name"]  # an unknown preset: refused below
    model = load_model(ws, name)
    if model is None:
        raise InputError(f"{jobs_file(ws)} records a {record['kind']} job named {record['name']!r}, which names no "
                         f"model; move the file away and run `ibsr-nnunet submit` again.")
    return model.progress(TrainingJob(record.get("epochs"), fold, record.get("trainer")))


def register_running_fold(ws: Workspace, configuration: str, fold: int, *, trainer: str, epochs: int,
                          iterations: int, preset: str = DEFAULT_PRESET,
                          say: Callable[[str], None] = print) -> Optional[dict]:
    """Record the running fold job (a script submitted by hand), once per job ID; None when it was already there.

    Run by the job itself, first: `submit` then never submits the fold again, and `status` shows it."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise InputError("register-job records the SLURM job it runs in, but SLURM_JOB_ID is not set; it is run by "
                         "the script of `ibsr-nnunet script`, inside the job.")
    ws.slurm.mkdir(parents=True, exist_ok=True)
    lock = _locked(ws, f"ibsr-nnunet register-job --config {configuration} --fold {fold}", say)
    try:
        jobs = load_jobs(ws)
        if any(r["kind"] == "fold" and str(r["job_id"]) == job_id and not r.get("array", True) for r in jobs):
            return None  # a requeued run of a job already recorded
        record = {"kind": "fold", "name": configuration, "preset": preset, "job_id": job_id, "folds": [fold],
                  "array": False,
                  "array_parallel": None, "trainer": trainer, "epochs": epochs, "iterations": iterations,
                  "script": "(sbatch by hand)", "argv": [], "by_hand": True,
                  "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
        jobs.append(record)
        save_jobs(ws, jobs)
        return record
    finally:
        lock.release()
