"""`submit`: the nnU-Net fold arrays, the baselines and the final job (ensemble + leaderboard) after all of them.

Planning is not submitted as a job: `submit` refuses with the exact `ibsr-nnunet plan` command when the plans are
missing (planning is minutes of CPU, it needs no GPU, and the configurations nnU-Net keeps decide what to submit).
Running it again skips what is finished, queued or running.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from baselines.registry import check_baseline_name, parse_baseline_name

from ..core.atomic import write_text
from ..core.choices import one_of, positive
from ..core.devices import DEVICES
from ..core.errors import InputError
from ..core.provenance import archive, dataset_fingerprint, staleness
from ..core.vocabulary import CONFIGURATIONS, N_FOLDS
from ..core.workspace import Workspace
from ..nnunet.fold import fold_finished
from ..nnunet.paths import (
    FULL_EPOCHS,
    FULL_ITERATIONS,
    fold_folder,
    plans_file,
    splits_file,
    trainer_files,
    trainer_name,
)
from ..nnunet.plans import read_plans, read_splits
from ..nnunet.presets import DEFAULT, Preset, refuse_oversized
from . import sbatch as render
from .jobs import append_job, job_progress, load_jobs, record_preset, state_key
from .slurm import Cluster, JobState, Runner, query_cluster, query_states, sbatch, scancel


@dataclass
class SubmitRequest:
    """What one `ibsr-nnunet submit` is asked for: the folds and baselines to train, their budget and resources."""

    configs: tuple[str, ...] = CONFIGURATIONS
    folds: tuple[int, ...] = tuple(range(N_FOLDS))
    presets: tuple[Preset, ...] = (DEFAULT,)  # nnU-Net plans presets: each gets one array per configuration
    baselines: tuple[str, ...] = ()  # "model__loss" or "model_view__loss"
    baseline_ensemble: bool = False  # the final job fuses every baseline (mean probability) before the leaderboard
    epochs: int = FULL_EPOCHS
    iterations: int = FULL_ITERATIONS
    device: str = "auto"
    resources: render.Resources = field(default_factory=render.Resources)
    dry_run: bool = False
    archive_stale: bool = False  # move folds and baseline runs made from another dataset aside, then train afresh

    def __post_init__(self) -> None:
        for name in self.baselines:
            check_baseline_name(name, "--baselines")
        if self.baseline_ensemble and len(set(self.baselines)) < 2:
            raise InputError(f"--baseline-ensemble fuses the baselines of --baselines, which names "
                             f"{len(set(self.baselines))}; name at least 2, e.g. --baselines "
                             f"unet2d__dice_ce,unet2d_axial__dice_ce,unet3d__dice_ce.")
        one_of("--device", self.device, DEVICES)
        positive("--epochs", self.epochs)
        positive("--iterations-per-epoch", self.iterations)


@dataclass
class Submission:
    kind: str  # "fold" | "baseline" | "final"
    name: str  # configuration, baseline name, or "final"
    script: Path
    argv: list[str]
    text: str
    folds: list[int] = field(default_factory=list)
    job_id: Optional[str] = None
    preset: Preset = DEFAULT  # a fold array's

    @property
    def label(self) -> str:
        """'2d', 'resenc-m 2d', a baseline's name or 'final'."""
        return self.preset.label(self.name) if self.kind == "fold" else self.name


@dataclass
class SubmitResult:
    submitted: list[Submission]
    skipped: list[str]  # one sentence per thing not submitted, and why
    dry_run: bool


def _check_planned(ws: Workspace, request: SubmitRequest) -> None:
    configs = ",".join(request.configs)
    for preset in request.presets:
        presets = preset.option("--presets")
        plans_json = plans_file(ws, preset)
        if not plans_json.is_file():
            raise InputError(f"{plans_json} does not exist: plan first with `ibsr-nnunet --workspace "
                             f"{shlex.quote(str(ws.root))} plan --configs {configs}{presets}`, then submit again.")
        planned = read_plans(ws, preset)["configurations"]
        missing = [c for c in request.configs if c not in planned]
        if missing:
            raise InputError(f"--configs {','.join(missing)} not in {plans_json.name} (has {', '.join(planned)}); "
                             f"run `ibsr-nnunet plan --configs {configs}{presets}` or drop them from --configs.")
    n_folds = len(read_splits(ws)) if splits_file(ws).is_file() else N_FOLDS
    wrong = [f for f in request.folds if not 0 <= f < n_folds]
    if wrong:
        raise InputError(f"--folds {','.join(map(str, wrong))} do not exist: the dataset has folds 0..{n_folds - 1}.")


def _check_gpu_memory(request: SubmitRequest) -> None:
    """A preset sized for more GPU memory than --gpu-memory is refused before any job starts (not on CPU jobs)."""
    resources = request.resources
    if request.configs and resources.gpus_per_job and request.device != "cpu":
        refuse_oversized(request.presets, resources.gpu_memory)


@dataclass
class _Campaign:
    """What one submit works from: the workspace, the request, the recorded jobs and SLURM's view of them."""

    ws: Workspace
    request: SubmitRequest
    cli: list[str]
    jobs: list[dict]
    states: dict[str, JobState]
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    skipped: list[str] = field(default_factory=list)

    fingerprint: str = ""

    def current(self, folder: Path) -> bool:
        """Made from the workspace's dataset (a stale run is never finished, whatever its files say)."""
        return staleness(folder, self.fingerprint) is None

    @property
    def trainer(self) -> str:
        return trainer_name(self.request.epochs, self.request.iterations)

    @property
    def scripts(self) -> Path:
        return self.ws.slurm / "scripts"

    @property
    def logs(self) -> Path:
        return self.ws.slurm / "logs"

    def active_job(self, kind: str, name: str, fold: Optional[int] = None,
                   preset: Preset = DEFAULT) -> Optional[str]:
        """The newest recorded job of this kind and name (and array task, and preset) still queued or running."""
        for record in reversed(self.jobs):
            if record["kind"] != kind or record["name"] != name:
                continue
            if kind == "fold" and record_preset(record) != preset.name:
                continue
            if fold is not None and fold not in record.get("folds", []):
                continue
            key = state_key(record, fold)
            state = self.states.get(key)
            if state is not None and state.active:
                return key
        return None

    def still_active(self) -> list[str]:
        """Training jobs of earlier submits still queued or running: the final job waits for them too."""
        return sorted({key for r in self.jobs if r["kind"] in ("fold", "baseline")
                       for key in _active_keys(self.states, r)})


MEMORY = re.compile(r"(\d+)([KMGT]?)B?", re.IGNORECASE)


def _megabytes(text: str) -> Optional[int]:
    """A SLURM memory size (default unit M) in MB; None when it is not one."""
    match = MEMORY.fullmatch(text.strip())
    if not match:
        return None
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match[2].upper()]
    return int(int(match[1]) * factor)


def check_resources(resources: render.Resources, cluster: Optional[Cluster], say: Callable[[str], None]) -> None:
    """Refuse what no node of the partition can ever give (the job would pend forever), naming the limit."""
    if cluster is None:
        say("note: SLURM did not answer `scontrol show partition` / `show node`: the resources were not checked "
            "against the cluster's nodes")
        return
    name = resources.partition or cluster.default_partition
    if name not in cluster.partitions:
        raise InputError(f"--partition {name}: the cluster has no such partition (it has "
                         f"{', '.join(cluster.partitions)}); pick one of those.")
    nodes = cluster.nodes_of(name)
    asked = {"--cpus-per-task": (resources.cpus_per_task, "cpus", "CPUs"),
             "--gpus-per-job": (resources.gpus_per_job, "gpus", "GPUs"),
             "--mem": (_megabytes(resources.mem) if resources.mem else 0, "memory_mb", "MB of memory")}
    for option, (wanted, attribute, unit) in asked.items():
        largest = max(nodes, key=lambda node: getattr(node, attribute), default=None)
        most = getattr(largest, attribute) if largest is not None else 0
        if wanted and wanted > most:
            which = f" ({largest.name})" if largest is not None else ""
            raise InputError(f"{option} asks for {wanted} {unit} but the largest node of partition {name}{which} has "
                             f"{most}: the job would pend forever; ask for {most} or fewer, or pick another "
                             f"--partition.")
    limit = cluster.partitions[name].max_time
    if resources.time and limit and (render.slurm_seconds(resources.time) or 0) > (render.slurm_seconds(limit) or 0):
        raise InputError(f"--time {resources.time} is above partition {name}'s MaxTime {limit}: sbatch would refuse "
                         f"or the job pend forever; pass --time {limit} or less.")


def _handle_stale(c: _Campaign, say: Callable[[str], None]) -> None:
    """Folds and baseline runs made from another dataset are never finished: with --archive-stale they are moved to
    <workspace>/stale/<time>/ (a dry run only says so) and trained afresh; without it, submit refuses. Stale folds
    beside the requested ones count too (training rewrites the files of their model folder, which `train` refuses);
    a fold goes with copies of those files."""
    requested = [fold_folder(c.ws, config, fold, trainer=c.trainer, plans=preset.plans)
                 for preset in c.request.presets for config in c.request.configs for fold in c.request.folds]
    beside = {f for folder in requested for f in folder.parent.glob("fold_*") if f.is_dir()}
    folders = sorted(set(requested) | beside) + [c.ws.baselines / name for name in c.request.baselines]
    stale = [(folder, why) for folder in folders if (why := staleness(folder, c.fingerprint))]
    if not stale:
        return
    listed = "; ".join(f"{folder.relative_to(c.ws.root)} ({why})" for folder, why in stale)
    if not c.request.archive_stale:
        raise InputError(f"stale runs would be trained on: {listed}; pass --archive-stale to move them to "
                         f"{c.ws.root / 'stale'}/<time>/ and train them afresh (nothing is deleted).")
    if c.request.dry_run:
        c.skipped.append(f"--archive-stale would move {len(stale)} stale run(s) aside: {listed}")
        return
    models = {folder.parent for folder, _ in stale if folder.name.startswith("fold_")}
    copies = [f for model in sorted(models) for f in trainer_files(model)]
    say(f"archived {len(stale)} stale run(s) to {archive(c.ws, [folder for folder, _ in stale], copies=copies)}: "
        f"{listed}")


def _fold_arrays(c: _Campaign) -> list[Submission]:
    """One array per preset and configuration, with the folds that are neither finished nor queued/running."""
    submissions = []
    for preset in c.request.presets:
        for config in c.request.configs:
            label = preset.label(config)
            todo = []
            for fold in c.request.folds:
                folder = fold_folder(c.ws, config, fold, trainer=c.trainer, plans=preset.plans)
                if fold_finished(folder) and c.current(folder):
                    c.skipped.append(f"{label} fold {fold}: already finished ({c.trainer})")
                elif (key := c.active_job("fold", config, fold, preset)) is not None:
                    c.skipped.append(f"{label} fold {fold}: job {key} is {c.states[key].state}")
                else:
                    todo.append(fold)
            if todo:
                text = render.render_fold_array(c.ws.root, c.cli, c.request.resources, configuration=config,
                                                epochs=c.request.epochs, iterations=c.request.iterations,
                                                device=c.request.device, preset=preset)
                tagged = preset.tagged(config)
                script = c.scripts / f"nnunet-{tagged}-{c.stamp}.sbatch"
                argv = render.sbatch_argv(script, render.log_pattern(c.logs, f"nnunet-{tagged}_%A_%a.out"),
                                          c.ws.slurm, array=todo, array_parallel=c.request.resources.array_parallel)
                submissions.append(Submission("fold", config, script, argv, text, folds=todo, preset=preset))
    return submissions


def _baseline_jobs(c: _Campaign) -> list[Submission]:
    """One job per baseline that is neither finished nor queued/running: train, then predict."""
    submissions = []
    for name in c.request.baselines:
        if (key := c.active_job("baseline", name)) is not None:
            c.skipped.append(f"baseline {name}: job {key} is {c.states[key].state}")
            continue
        if _baseline_done(c, name):
            c.skipped.append(f"baseline {name}: already finished")
            continue
        model, view, loss = parse_baseline_name(name)
        text = render.render_baseline(c.ws.root, c.cli, c.request.resources, model=model, loss=loss, view=view,
                                      epochs=c.request.epochs, iterations=c.request.iterations, device=c.request.device)
        script = c.scripts / f"baseline-{name}-{c.stamp}.sbatch"
        argv = render.sbatch_argv(script, render.log_pattern(c.logs, f"baseline-{name}_%j.out"), c.ws.slurm)
        submissions.append(Submission("baseline", name, script, argv, text))
    return submissions


def _final_job(c: _Campaign, training: list[Submission]) -> tuple[Optional[Submission], list[str]]:
    """The final job (ensemble + leaderboard) to submit, if any, and pending final jobs it replaces."""
    final = c.active_job("final", "final")
    cancel: list[str] = []
    if final is not None and training:
        if c.states[final].state == "PENDING":
            cancel.append(final)  # it would not wait for the new jobs: replace it by one that does
        final = None  # a running one finishes; the new one runs after the new jobs and rewrites the results
    if final is not None:
        c.skipped.append(f"final job {final} is {c.states[final].state}: kept")
    elif _final_completed(c) and c.ws.leaderboard.is_file() and not training:
        c.skipped.append("final job already completed and nothing new was submitted")
    elif c.request.configs or c.request.baseline_ensemble:
        text = render.render_final(c.ws.root, c.cli, c.request.resources,
                                   trainer=c.trainer if c.request.configs else None, device=c.request.device,
                                   baseline_ensemble=tuple(dict.fromkeys(c.request.baselines))
                                   if c.request.baseline_ensemble else ())
        return Submission("final", "final", c.scripts / f"final-{c.stamp}.sbatch", [], text), cancel
    else:
        c.skipped.append("final job: not submitted without nnU-Net configurations (--configs) or "
                         "--baseline-ensemble")
    return None, cancel


def _final_argv(c: _Campaign, final: Submission, dependencies: list[str]) -> list[str]:
    return render.sbatch_argv(final.script, render.log_pattern(c.logs, "final_%j.out"), c.ws.slurm,
                              dependency=dependencies + c.still_active())


def _record(c: _Campaign, sub: Submission, say: Callable[[str], None]) -> None:
    throttle = c.request.resources.array_parallel if sub.kind == "fold" else None
    c.jobs = append_job(c.ws, {  # after every sbatch: a crash later never loses a job ID
        "kind": sub.kind, "name": sub.name, **({"preset": sub.preset.name} if sub.kind == "fold" else {}),
        "job_id": sub.job_id, "folds": sub.folds, "array": sub.kind == "fold",
        "array_parallel": throttle, "trainer": c.trainer, "epochs": c.request.epochs,
        "iterations": c.request.iterations,
        "script": str(sub.script), "argv": sub.argv, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}, say=say)


def submit(ws: Workspace, request: SubmitRequest, *, cli: Optional[Sequence[str]] = None,
           runner: Runner = subprocess.run, say: Callable[[str], None] = print) -> SubmitResult:
    """Submit what is neither finished nor already queued/running, then the final job after all of it."""
    if not request.configs and not request.baselines:
        raise InputError("nothing to submit: give --configs and/or --baselines.")
    request.resources.tracking.require()  # the jobs run this installation's command
    _check_gpu_memory(request)
    if request.configs:
        _check_planned(ws, request)
    states = query_states(runner)
    if states is None and not request.dry_run:
        raise InputError("SLURM does not answer (`scontrol show job` failed): is this a cluster login node with "
                         "SLURM_CONF set? For a local test cluster run `slurm/local-cluster.sh start`.")
    check_resources(request.resources, query_cluster(runner), say)
    c = _Campaign(ws, request, list(cli or render.default_cli()), load_jobs(ws), states or {},
                  fingerprint=dataset_fingerprint(ws))
    _handle_stale(c, say)
    training = _fold_arrays(c) + _baseline_jobs(c)
    final, cancel = _final_job(c, training)
    submitted = training + ([final] if final else [])

    if request.dry_run:
        if final:
            final.argv = _final_argv(c, final, [f"<{s.kind}:{s.label.replace(' ', ':')}>" for s in training])
        return SubmitResult(submitted, c.skipped, dry_run=True)

    for job_id in cancel:
        scancel(runner, job_id)
        say(f"cancelled the pending final job {job_id}: a new one waits for the new jobs too")
    c.logs.mkdir(parents=True, exist_ok=True)
    for sub in submitted:
        if sub is final:
            sub.argv = _final_argv(c, sub, [s.job_id for s in training if s.job_id])
        write_text(sub.script, sub.text)
        sub.job_id = sbatch(runner, sub.argv)
        _record(c, sub, say)
        say(f"submitted {sub.kind} {sub.label}" + (f" folds {','.join(map(str, sub.folds))}" if sub.folds else "")
            + f": job {sub.job_id}")
    return SubmitResult(submitted, c.skipped, dry_run=False)


def _active_keys(states: dict[str, JobState], record: dict) -> list[str]:
    """The record's jobs still queued or running: array tasks as 'ID_TASK' (a dependency names just those)."""
    keys = [state_key(record, f) for f in record["folds"]] if record.get("folds") else [state_key(record, None)]
    return [k for k in keys if (s := states.get(k)) is not None and s.active]


def _final_completed(c: _Campaign) -> bool:
    finals = [r for r in c.jobs if r["kind"] == "final"]
    if not finals:
        return False
    state = c.states.get(finals[-1]["job_id"])
    return state is None or state.state == "COMPLETED"  # purged from memory: judged by leaderboard.csv


def _baseline_done(c: _Campaign, name: str) -> bool:
    """A baseline is done when its last job COMPLETED, or its training finished and its predictions exist."""
    records = [r for r in c.jobs if r["kind"] == "baseline" and r["name"] == name]
    state = c.states.get(records[-1]["job_id"]) if records else None
    done = ((state is not None and state.state == "COMPLETED")
            or job_progress(c.ws, {"kind": "baseline", "name": name}).finished)
    return done and c.current(c.ws.baselines / name)


def fold_script(ws: Workspace, configuration: str, fold: int, *, epochs: int, iterations: int, device: str,
                resources: render.Resources, cli: Optional[Sequence[str]] = None, preset: Preset = DEFAULT) -> str:
    """One fold's script to `sbatch` by hand, after the same checks as `submit` (planned, the fold exists, the
    preset fits the GPUs' memory)."""
    resources.tracking.require()
    request = SubmitRequest(configs=(configuration,), folds=(fold,), presets=(preset,), epochs=epochs,
                            iterations=iterations, device=device, resources=resources)
    _check_gpu_memory(request)
    _check_planned(ws, request)
    return render.render_fold(ws.root, list(cli or render.default_cli()), resources, configuration=configuration,
                              fold=fold, epochs=epochs, iterations=iterations, device=device, preset=preset)
