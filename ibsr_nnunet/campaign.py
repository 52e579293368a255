"""The SLURM campaign: submit the training arrays, baselines and the final job; report where every fold stands.

The one door to SLURM's commands (sbatch, squeue/scontrol, scancel), always as argv lists, never through a shell.
Job state comes from `scontrol -o show job` (the controller's memory: no accounting database needed); what each
submit did is recorded in `<workspace>/slurm/jobs.json`, written atomically after every sbatch.

Planning is not submitted as a job: `submit` refuses with the exact `ibsr-nnunet plan` command when the plans are
missing (planning is minutes of CPU, it needs no GPU, and the configurations nnU-Net keeps decide what to submit).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import sbatch as render
from .atomic import write_json, write_text
from .errors import InputError
from .nnunet import (  # nnunetv2 itself loads lazily
    CONFIGURATIONS, FULL_EPOCHS, FULL_ITERATIONS, fold_finished, fold_folder, trainer_name,
)

# states in which a job still holds (or waits for) its place: submitting again must not duplicate it
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING",
                 "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}
Runner = Callable[..., subprocess.CompletedProcess]


# ---- job records ------------------------------------------------------------------------------------------------

def jobs_file(ws) -> Path:
    return ws.slurm / "jobs.json"


def load_jobs(ws) -> list[dict]:
    path = jobs_file(ws)
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["jobs"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is unreadable ({err}); move it away and run `ibsr-nnunet submit` again "
                         f"(check `squeue` for jobs it recorded first).") from None


def save_jobs(ws, jobs: list[dict]) -> None:
    write_json(jobs_file(ws), {"jobs": jobs})


# ---- SLURM state ------------------------------------------------------------------------------------------------

@dataclass
class JobState:
    job_id: str  # "12" or "12_3" for an array task
    state: str
    reason: str = ""
    restarts: int = 0
    exit_code: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _field(line: str, key: str) -> str:
    match = re.search(rf"(?:^|\s){key}=(\S*)", line)
    return match.group(1) if match else ""


def _task_ids(spec: str) -> list[int]:
    """'0-4%2' or '1,3-4' -> [0..4] / [1, 3, 4]."""
    ids: list[int] = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            ids.extend(range(int(lo), int(hi.split(":")[0]) + 1))
        elif part.isdigit():
            ids.append(int(part))
    return ids


def parse_show_job(text: str) -> dict[str, JobState]:
    """`scontrol -o show job` output -> states keyed by job id and, for array tasks, by 'ARRAYID_TASK'."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        job_id = _field(line, "JobId")
        if not job_id:
            continue
        restarts = _field(line, "Restarts")
        state = JobState(job_id, _field(line, "JobState"), _field(line, "Reason"),
                         int(restarts) if restarts.isdigit() else 0, _field(line, "ExitCode"))
        array_id, tasks = _field(line, "ArrayJobId"), _field(line, "ArrayTaskId")
        if array_id and tasks:
            for task in _task_ids(tasks):
                states[f"{array_id}_{task}"] = JobState(f"{array_id}_{task}", state.state, state.reason,
                                                        state.restarts, state.exit_code)
            states.setdefault(job_id, state)
        else:
            states[job_id] = state
    return states


def query_states(run: Runner = subprocess.run) -> Optional[dict[str, JobState]]:
    """Every job the controller still knows (finished ones for MinJobAge); None when SLURM cannot be asked."""
    try:
        result = run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_show_job(result.stdout)


def array_state(states: Optional[dict[str, JobState]], job_id: str) -> Optional[JobState]:
    """An array job's overall state: active if any task is, else the last task's."""
    if not states:
        return None
    tasks = [s for key, s in states.items() if key.startswith(f"{job_id}_")]
    if not tasks:
        return states.get(job_id)
    return next((t for t in tasks if t.active), tasks[-1])


# ---- submit -----------------------------------------------------------------------------------------------------

@dataclass
class SubmitPlan:
    configs: tuple[str, ...] = CONFIGURATIONS
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    baselines: tuple[str, ...] = ()  # "model__loss"
    epochs: int = FULL_EPOCHS
    iterations: int = FULL_ITERATIONS
    device: str = "auto"
    resources: render.Resources = field(default_factory=render.Resources)
    dry_run: bool = False


@dataclass
class Submission:
    kind: str  # "fold" | "baseline" | "final"
    name: str  # configuration, baseline name, or "final"
    script: Path
    argv: list[str]
    text: str
    folds: list[int] = field(default_factory=list)
    job_id: Optional[str] = None


@dataclass
class SubmitResult:
    submitted: list[Submission]
    skipped: list[str]  # one sentence per thing not submitted, and why
    dry_run: bool


def parse_baselines(text: str) -> tuple[str, ...]:
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+", name):
            raise InputError(f"--baselines {name!r}: write each as MODEL__LOSS, e.g. unet2d__dice_ce.")
    return names


def _check_planned(ws, plan: SubmitPlan) -> None:
    configs = ",".join(plan.configs)
    plans_file = ws.preprocessed_dataset / "nnUNetPlans.json"
    if not plans_file.is_file():
        raise InputError(f"{plans_file} does not exist: plan first with `ibsr-nnunet --workspace "
                         f"{shlex.quote(str(ws.root))} plan --configs {configs}`, then submit again.")
    planned = json.loads(plans_file.read_text())["configurations"]
    missing = [c for c in plan.configs if c not in planned]
    if missing:
        raise InputError(f"--configs {','.join(missing)} not in {plans_file.name} (has {', '.join(planned)}); "
                         f"run `ibsr-nnunet plan --configs {configs}` or drop them from --configs.")
    splits_file = ws.preprocessed_dataset / "splits_final.json"
    n_folds = len(json.loads(splits_file.read_text())) if splits_file.is_file() else 5
    wrong = [f for f in plan.folds if not 0 <= f < n_folds]
    if wrong:
        raise InputError(f"--folds {','.join(map(str, wrong))} do not exist: the dataset has folds 0..{n_folds - 1}.")


def submit(ws, plan: SubmitPlan, cli: Optional[Sequence[str]] = None, run: Runner = subprocess.run,
           say: Callable[[str], None] = print) -> SubmitResult:
    """Submit what is neither finished nor already queued/running, then the final job after all of it."""
    if not plan.configs and not plan.baselines:
        raise InputError("nothing to submit: give --configs and/or --baselines.")
    if plan.configs:
        _check_planned(ws, plan)
    cli = list(cli or render.default_cli())
    trainer = trainer_name(plan.epochs, plan.iterations)
    jobs = load_jobs(ws)
    states = query_states(run)
    if states is None and not plan.dry_run:
        raise InputError("SLURM does not answer (`scontrol show job` failed): is this a cluster login node with "
                         "SLURM_CONF set? For a local test cluster run `slurm/local-cluster.sh start`.")
    states = states or {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scripts, logs = ws.slurm / "scripts", ws.slurm / "logs"
    submitted: list[Submission] = []
    skipped: list[str] = []

    def active_job(kind: str, name: str, fold: Optional[int] = None) -> Optional[str]:
        for record in reversed(jobs):
            if record["kind"] != kind or record["name"] != name:
                continue
            if fold is not None and fold not in record.get("folds", []):
                continue
            key = f"{record['job_id']}_{fold}" if fold is not None else record["job_id"]
            state = states.get(key)
            if state is not None and state.active:
                return key
        return None

    # nnU-Net arrays: one per configuration, only the folds that are neither finished nor queued/running
    for config in plan.configs:
        todo = []
        for fold in plan.folds:
            if fold_finished(fold_folder(ws, config, fold, trainer)):
                skipped.append(f"{config} fold {fold}: already finished ({trainer})")
            elif (key := active_job("fold", config, fold)) is not None:
                skipped.append(f"{config} fold {fold}: job {key} is {states[key].state if key in states else 'active'}")
            else:
                todo.append(fold)
        if todo:
            text = render.render_fold_array(ws.root, cli, plan.resources, config, plan.epochs, plan.iterations,
                                            plan.device)
            script = scripts / f"nnunet-{config}-{stamp}.sbatch"
            argv = render.sbatch_argv(script, render.log_pattern(logs, f"nnunet-{config}_%A_%a.out"),
                                      ws.slurm, array=todo)
            submitted.append(Submission("fold", config, script, argv, text, folds=todo))

    for name in plan.baselines:
        if (key := active_job("baseline", name)) is not None:
            skipped.append(f"baseline {name}: job {key} is {states[key].state}")
            continue
        if _baseline_done(ws, jobs, states, name):
            skipped.append(f"baseline {name}: already finished")
            continue
        model, loss = name.split("__", 1)
        text = render.render_baseline(ws.root, cli, plan.resources, model, loss, plan.epochs, plan.iterations,
                                      plan.device)
        script = scripts / f"baseline-{name}-{stamp}.sbatch"
        argv = render.sbatch_argv(script, render.log_pattern(logs, f"baseline-{name}_%j.out"), ws.slurm)
        submitted.append(Submission("baseline", name, script, argv, text))

    # the final job waits (afterok) for everything of this campaign still queued or running
    waiting_on = [s for s in submitted]
    still_active = sorted({key for r in jobs if r["kind"] in ("fold", "baseline") for key in _active_keys(states, r)})
    final = active_job("final", "final")
    final_done = _final_completed(jobs, states) and ws.leaderboard.is_file()
    cancel: list[str] = []
    if final is not None and waiting_on:
        if states[final].state == "PENDING":
            cancel.append(final)  # it would not wait for the new jobs: replace it by one that does
        final = None  # a running one finishes; the new one runs after the new jobs and rewrites the results
    if final is not None:
        skipped.append(f"final job {final} is {states[final].state}: kept")
    elif final_done and not waiting_on:
        skipped.append("final job already completed and nothing new was submitted")
    elif plan.configs:
        text = render.render_final(ws.root, cli, plan.resources, trainer, plan.device)
        script = scripts / f"final-{stamp}.sbatch"
        submitted.append(Submission("final", "final", script, [], text))
    else:
        skipped.append("final job: not submitted without nnU-Net configurations (--configs)")

    if plan.dry_run:
        for sub in submitted:
            if sub.kind == "final":
                deps = [f"<{s.kind}:{s.name}>" for s in submitted if s.kind != "final"] + still_active
                sub.argv = render.sbatch_argv(sub.script, render.log_pattern(logs, "final_%j.out"),
                                              ws.slurm, dependency=deps)
        return SubmitResult(submitted, skipped, dry_run=True)

    for job_id in cancel:
        run(["scancel", job_id], capture_output=True, text=True, timeout=60)
        say(f"cancelled the pending final job {job_id}: a new one waits for the new jobs too")
    logs.mkdir(parents=True, exist_ok=True)
    for sub in submitted:
        if sub.kind == "final":
            deps = [s.job_id for s in submitted if s.kind != "final" and s.job_id] + still_active
            sub.argv = render.sbatch_argv(sub.script, render.log_pattern(logs, "final_%j.out"),
                                          ws.slurm, dependency=deps)
        write_text(sub.script, sub.text)
        sub.job_id = _sbatch(run, sub.argv)
        jobs.append({"kind": sub.kind, "name": sub.name, "job_id": sub.job_id, "folds": sub.folds,
                     "trainer": trainer, "epochs": plan.epochs, "iterations": plan.iterations,
                     "script": str(sub.script), "argv": sub.argv, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
        save_jobs(ws, jobs)  # after every sbatch: a crash later never loses a job ID
        say(f"submitted {sub.kind} {sub.name}" + (f" folds {','.join(map(str, sub.folds))}" if sub.folds else "")
            + f": job {sub.job_id}")
    return SubmitResult(submitted, skipped, dry_run=False)


def _sbatch(run: Runner, argv: list[str]) -> str:
    try:
        result = run(argv, capture_output=True, text=True, timeout=120)
    except OSError as err:
        raise InputError(f"sbatch could not be started ({err}); run submit on a SLURM login node.") from None
    if result.returncode != 0:
        raise InputError(f"sbatch refused {argv[-1]}: {' '.join(result.stderr.split())}; "
                         f"fix the option it names (or --extra-sbatch / --config-file) and submit again.")
    return result.stdout.strip().split(";")[0]


def _active_keys(states: dict[str, JobState], record: dict) -> list[str]:
    """The record's jobs still queued or running: array tasks as 'ID_TASK' (a dependency names just those)."""
    keys = [f"{record['job_id']}_{f}" for f in record["folds"]] if record.get("folds") else [record["job_id"]]
    return [k for k in keys if (s := states.get(k)) is not None and s.active]


def _final_completed(jobs: list[dict], states: dict[str, JobState]) -> bool:
    finals = [r for r in jobs if r["kind"] == "final"]
    if not finals:
        return False
    state = states.get(finals[-1]["job_id"])
    return state is None or state.state == "COMPLETED"  # purged from memory: judged by leaderboard.csv


def _baseline_done(ws, jobs: list[dict], states: dict[str, JobState], name: str) -> bool:
    """A baseline is done when its last job COMPLETED, or its training finished and its predictions exist."""
    records = [r for r in jobs if r["kind"] == "baseline" and r["name"] == name]
    state = states.get(records[-1]["job_id"]) if records else None
    return (state is not None and state.state == "COMPLETED") or baseline_progress(ws, name).finished


def baseline_progress(ws, name: str) -> Progress:
    """From the baseline's own run.json and log.csv (baselines/train.py writes them at every save)."""
    progress = Progress()
    folder = ws.baselines / name
    try:
        run = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return progress
    progress.epochs_done = int(run.get("epochs_done") or 0)
    progress.validation_dice = run.get("best_val_dice")
    predictions = ws.predictions / name
    progress.finished = bool(run.get("finished")) and predictions.is_dir() and any(predictions.glob("*.nii.gz"))
    try:
        with open(folder / "log.csv", newline="") as handle:
            last = list(csv.DictReader(handle))[-1:]
        if last:
            progress.val_loss = float(last[0]["val_loss"]) if last[0].get("val_loss") else None
            progress.pseudo_dice = float(last[0]["val_dice"]) if last[0].get("val_dice") else None
    except (OSError, ValueError, KeyError):
        pass
    return progress


# ---- status -----------------------------------------------------------------------------------------------------

@dataclass
class Progress:
    epochs_done: int = 0
    pseudo_dice: Optional[float] = None
    val_loss: Optional[float] = None
    validation_dice: Optional[float] = None  # mean foreground Dice of nnU-Net's final validation
    finished: bool = False
    resumed_at: list[int] = field(default_factory=list)


def fold_progress(folder: Path, epochs: int) -> Progress:
    """Read progress from nnU-Net's own files (training logs, validation summary): no torch needed."""
    from .history import nnunet_fold_curve

    progress = Progress(finished=fold_finished(folder))
    curve = nnunet_fold_curve(folder)
    completed = curve.dropna(subset=["train_loss"])  # an epoch's losses are logged when it ends
    progress.epochs_done = epochs if progress.finished else (int(completed["epoch"].max()) + 1 if len(completed) else 0)
    for column, attribute in (("pseudo_dice", "pseudo_dice"), ("val_loss", "val_loss")):
        values = curve[column].dropna()
        if len(values):
            setattr(progress, attribute, float(values.iloc[-1]))
    summary = folder / "validation" / "summary.json"
    if summary.is_file():
        try:
            progress.validation_dice = float(json.loads(summary.read_text())["foreground_mean"]["Dice"])
        except (ValueError, KeyError, TypeError):
            pass
    return progress


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


def status(ws, run: Runner = subprocess.run) -> tuple[list[StatusRow], bool]:
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
