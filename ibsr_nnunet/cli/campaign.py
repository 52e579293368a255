"""`submit` and `status`: the SLURM campaign (rendering in campaign/sbatch.py, SLURM calls in campaign/slurm.py)."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..core.tracking import DEFAULT_PROJECT, EXTRA as TRACKING_EXTRA
from ..core.vocabulary import CONFIGURATIONS, DEFAULT_PRESET
from ..nnunet.paths import FULL_EPOCHS, FULL_ITERATIONS
from ..nnunet.presets import preset_named, presets_named
from .common import (
    ALL_FOLDS,
    ArchiveStaleOption,
    Configuration,
    Device,
    DeviceOption,
    PresetChoice,
    PresetOption,
    PresetsOption,
    baselines_list,
    configs_or_none,
    console,
    folds_list,
    number,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("The SLURM campaign: submit every job, follow their state.")

# the resource options of `submit` and `script` (the same names as the --config-file keys)
Partition = Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.")]
Account = Annotated[Optional[str], typer.Option("--account", help="SLURM account.")]
TimeLimit = Annotated[Optional[str], typer.Option(
    "--time", help="Time limit of each job run, e.g. 24:00:00 (a requeued run gets it again).")]
GpusPerJob = Annotated[Optional[int], typer.Option(
    "--gpus-per-job", help="GPUs per job (default 1; 0 = CPU-only cluster, no GPU request).")]
CpusPerTask = Annotated[Optional[int], typer.Option("--cpus-per-task", help="CPUs per job (default 8).")]
Mem = Annotated[Optional[str], typer.Option("--mem", help="Memory per job, e.g. 32G (default: the partition's).")]
SignalGrace = Annotated[Optional[int], typer.Option(
    "--signal-grace",
    help="Seconds before the time limit that USR1 asks a job to save and requeue (default 600; less than --time).")]
ExtraSbatch = Annotated[Optional[List[str]], typer.Option(
    "--extra-sbatch", help="Another #SBATCH option, e.g. --qos=long (repeatable).")]
Setup = Annotated[Optional[List[str]], typer.Option(
    "--setup", help="A shell line every job runs first, e.g. 'module load cuda/12.4' "
                    "(repeatable; trusted shell, written verbatim).")]
MaxRestarts = Annotated[Optional[int], typer.Option(
    "--max-restarts", help="Requeues a training job may ask for before it ends FAILED (default 50).")]
StageData = Annotated[Optional[bool], typer.Option(
    "--stage-data/--no-stage-data",
    help="nnU-Net folds copy the preprocessed data to node-local disk first (default: no).")]
LocalScratch = Annotated[Optional[str], typer.Option(
    "--local-scratch", help="Node-local folder for --stage-data (default: $SLURM_TMPDIR, else $TMPDIR).")]
ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config-file",
    help="TOML with these settings (partition, account, time, gpus_per_job, gpu_option, cpus_per_task, mem, "
         "signal_grace, extra_sbatch, setup, max_restarts, array_parallel, stage_data, local_scratch, seed, "
         "gpu_memory, track, track_mode, track_project); options win.")]
GpuMemory = Annotated[Optional[int], typer.Option(
    "--gpu-memory", min=1, help="GB of memory of each GPU: a preset sized for more (resenc-l 24, resenc-xl 40) is "
                                "refused before any job starts.")]
Seed = Annotated[Optional[int], typer.Option(
    "--seed", min=0, help="nnU-Net folds train seeded (`train --seed`; default: unseeded).")]
Track = Annotated[Optional[str], typer.Option(
    "--track", help=f"Every training job logs its epochs to Weights & Biases: wandb (needs `{TRACKING_EXTRA}`); a "
                    f"requeued job continues the same W&B run.")]
TrackMode = Annotated[Optional[str], typer.Option(
    "--track-mode", help="offline (default: files in each run folder's wandb/, `wandb sync` later) or online.")]
TrackProject = Annotated[Optional[str], typer.Option(
    "--track-project", help=f"The W&B project (default {DEFAULT_PROJECT}).")]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Epochs of every training job.")]
Iterations = Annotated[int, typer.Option(
    "--iterations-per-epoch", min=1, help="Iterations per epoch of every training job.")]


@app.command()
@refusals
def submit(
    ctx: typer.Context,
    configs: str = typer.Option(",".join(CONFIGURATIONS), "--configs", callback=configs_or_none,
                                help="nnU-Net configurations: one array job each ('' for none)."),
    folds: str = typer.Option(ALL_FOLDS, "--folds", callback=folds_list,
                              help="Folds: the array indices of every configuration."),
    presets: PresetsOption = DEFAULT_PRESET,
    baselines: str = typer.Option("", "--baselines", callback=baselines_list,
                                  help="Baseline jobs as MODEL__LOSS or MODEL_VIEW__LOSS, comma-separated, e.g. "
                                  "unet2d__dice_ce,unet2d_axial__dice_ce."),
    baseline_ensemble: bool = typer.Option(
        False, "--baseline-ensemble", help="The final job also fuses every baseline of --baselines by mean "
        "probability (`baseline ensemble`, model baseline_ensemble) before the leaderboard."),
    epochs: Epochs = FULL_EPOCHS,
    iterations: Iterations = FULL_ITERATIONS,
    device: DeviceOption = Device.auto,
    partition: Partition = None,
    account: Account = None,
    time_limit: TimeLimit = None,
    gpus_per_job: GpusPerJob = None,
    cpus_per_task: CpusPerTask = None,
    mem: Mem = None,
    signal_grace: SignalGrace = None,
    extra_sbatch: ExtraSbatch = None,
    setup: Setup = None,
    max_restarts: MaxRestarts = None,
    array_parallel: Annotated[Optional[int], typer.Option(
        "--array-parallel",
        help="Fold array tasks running at once per configuration (--array=...%N; default: no limit).")] = None,
    stage_data: StageData = None,
    local_scratch: LocalScratch = None,
    seed: Seed = None,
    gpu_memory: GpuMemory = None,
    track: Track = None,
    track_mode: TrackMode = None,
    track_project: TrackProject = None,
    config_file: ConfigFile = None,
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the scripts and sbatch command lines; submit nothing."),
    archive_stale: ArchiveStaleOption = False,
) -> None:
    """Submit the campaign: nnU-Net fold arrays, baselines, then ensemble + leaderboard once all succeeded."""
    from ..campaign.jobs import jobs_file
    from ..campaign.sbatch import resources_from
    from ..campaign.submit import SubmitRequest, submit as run_submit

    ws = workspace_of(ctx)
    resources = resources_from(config_file, partition=partition, account=account, time=time_limit,
                               gpus_per_job=gpus_per_job, cpus_per_task=cpus_per_task, mem=mem,
                               signal_grace=signal_grace, extra_sbatch=extra_sbatch, setup=setup,
                               max_restarts=max_restarts, array_parallel=array_parallel, stage_data=stage_data,
                               local_scratch=local_scratch, seed=seed, gpu_memory=gpu_memory, track=track,
                               track_mode=track_mode, track_project=track_project)
    request = SubmitRequest(
        configs=tuple(configs), folds=tuple(int(f) for f in folds), presets=presets_named(presets),
        baselines=tuple(baselines), baseline_ensemble=baseline_ensemble, epochs=epochs, iterations=iterations,
        device=device.value, resources=resources,
        dry_run=dry_run, archive_stale=archive_stale)
    result = run_submit(ws, request, say=console.print)
    if dry_run:
        for sub in result.submitted:  # verbatim (no rich wrapping): what would be written and run
            typer.echo(f"# ===== {sub.kind} {sub.label}: {sub.script} =====")
            typer.echo(sub.text, nl=False)
            typer.echo(f"# ===== sbatch command line =====\n{shlex.join(sub.argv)}")
    for line in result.skipped:
        console.print(f"not submitted: {line}", markup=False)
    if dry_run:
        console.print(f"dry run: {len(result.submitted)} job(s) would be submitted; nothing was.")
    elif result.submitted:
        console.print(f"recorded in {jobs_file(ws)}; follow with `ibsr-nnunet status`", markup=False)
    else:
        console.print("nothing to submit: every job is finished, queued or running.")


def duration(seconds: Optional[float]) -> str:
    """1d 02:03 / 2:03:04 / 3:04 (minutes:seconds)."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}:{minutes:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _eta(seconds: Optional[float], at: Optional[str]) -> str:
    if seconds is None:
        return "-"
    return "done" if seconds == 0 else f"{duration(seconds)} ({at[:16].replace('T', ' ')} UTC)"


def _ended_by(reasons: list[str]) -> str:
    """['usr1', 'usr1', 'killed', 'finished'] -> 'usr1×2, killed, finished'."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{reason}×{n}" if n > 1 else reason for reason, n in counts.items()) or "-"


@app.command()
@refusals
def script(
    ctx: typer.Context,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Cross-validation fold.")],
    config: Annotated[Configuration, typer.Option("--config", help="nnU-Net configuration.")],
    preset: PresetOption = PresetChoice.default,
    epochs: Epochs = FULL_EPOCHS,
    iterations: Iterations = FULL_ITERATIONS,
    device: DeviceOption = Device.auto,
    partition: Partition = None,
    account: Account = None,
    time_limit: TimeLimit = None,
    gpus_per_job: GpusPerJob = None,
    cpus_per_task: CpusPerTask = None,
    mem: Mem = None,
    signal_grace: SignalGrace = None,
    extra_sbatch: ExtraSbatch = None,
    setup: Setup = None,
    max_restarts: MaxRestarts = None,
    stage_data: StageData = None,
    local_scratch: LocalScratch = None,
    seed: Seed = None,
    gpu_memory: GpuMemory = None,
    track: Track = None,
    track_mode: TrackMode = None,
    track_project: TrackProject = None,
    config_file: ConfigFile = None,
) -> None:
    """Print one fold's job script to sbatch by hand (`script ... > fold0.sbatch && sbatch fold0.sbatch`)."""
    from ..campaign.jobs import jobs_file
    from ..campaign.sbatch import resources_from
    from ..campaign.submit import fold_script

    ws = workspace_of(ctx)
    resources = resources_from(config_file, partition=partition, account=account, time=time_limit,
                               gpus_per_job=gpus_per_job, cpus_per_task=cpus_per_task, mem=mem,
                               signal_grace=signal_grace, extra_sbatch=extra_sbatch, setup=setup,
                               max_restarts=max_restarts, stage_data=stage_data, local_scratch=local_scratch,
                               seed=seed, gpu_memory=gpu_memory, track=track, track_mode=track_mode,
                               track_project=track_project)
    text = fold_script(ws, config.value, fold, epochs=epochs, iterations=iterations, device=device.value,
                       resources=resources, preset=preset_named(preset.value))
    typer.echo(text, nl=False)  # the script alone on stdout; what to know about it on stderr
    typer.echo(f"# {config.value} fold {fold}: `sbatch` this script; its log is slurm-<job id>.out in the folder you "
               f"run sbatch from (or pass sbatch --output=FILE); once it starts it is recorded in {jobs_file(ws)}.",
               err=True)


@app.command("register-job", hidden=True)
@refusals
def register_job(
    ctx: typer.Context,
    fold: Annotated[int, typer.Option("--fold", min=0)],
    config: Annotated[Configuration, typer.Option("--config")],
    epochs: Epochs = FULL_EPOCHS,
    iterations: Iterations = FULL_ITERATIONS,
    preset: PresetOption = PresetChoice.default,
) -> None:
    """Record the running fold job in slurm/jobs.json (the first step of a script from `ibsr-nnunet script`)."""
    from ..campaign.jobs import jobs_file, register_running_fold
    from ..nnunet.paths import trainer_name

    ws = workspace_of(ctx)
    record = register_running_fold(ws, config.value, fold, trainer=trainer_name(epochs, iterations), epochs=epochs,
                                   iterations=iterations, preset=preset.value, say=console.print)
    if record is not None:
        console.print(f"recorded job {record['job_id']} ({config.value} fold {fold}) in {jobs_file(ws)}", markup=False)


@app.command()
@refusals
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Every fold, baseline and the final job: SLURM state, restarts and why runs ended, epochs, time per epoch,
    ETA, GPU-hours, last pseudo-Dice, finished; and when the campaign ends."""
    from ..campaign.jobs import jobs_file
    from ..campaign.status import status as run_status

    ws = workspace_of(ctx)
    report = run_status(ws)
    rows = report.rows
    if as_json:
        campaign = {k: v for k, v in asdict(report).items() if k not in ("rows", "slurm_answered")}
        print(json.dumps({"workspace": str(ws.root), "slurm_answered": report.slurm_answered, "campaign": campaign,
                          "jobs": [asdict(r) for r in rows]}, indent=2))
        return
    if not rows:
        console.print(f"no campaign recorded in {jobs_file(ws)}: run `ibsr-nnunet submit` first.", markup=False)
        return
    table = Table(title=f"{ws.dataset_name}: SLURM campaign")
    for column in ("job", "fold", "SLURM job", "state", "restarts", "epoch", "pseudo-Dice", "val loss", "finished"):
        table.add_column(column)
    times = Table(title="time (from each run folder's runs.jsonl and training logs)")
    for column in ("job", "fold", "runs ended by", "nodes", "redone", "s/epoch", "ETA", "GPU h"):
        times.add_column(column)
    for r in rows:
        state = r.state + (f" ({r.reason})" if r.reason and r.reason != "None" else "")
        epoch = f"{r.epochs_done}/{r.epochs_total}" if r.epochs_done is not None else "-"
        finished = "[red]stale[/] (made from another dataset)" if r.stale else ("yes" if r.finished else "no")
        if r.validation_dice is not None and not r.stale:
            finished += f" (val Dice {r.validation_dice:.4f})"
        name = {"fold": f"nnU-Net {r.name}", "baseline": f"baseline {r.name}",
                "final": "ensemble + leaderboard"}[r.kind]
        fold = "-" if r.fold is None else str(r.fold)
        table.add_row(name, fold, r.job_id or "-", escape(state), "-" if r.restarts is None else str(r.restarts),
                      epoch, number(r.pseudo_dice), number(r.val_loss), finished)
        if r.kind != "final":
            times.add_row(name, fold, _ended_by(r.end_reasons), ", ".join(r.nodes) or "-", f"{r.epochs_redone} ep",
                          number(r.seconds_per_epoch, 1),
                          _eta(r.eta_seconds, r.eta_utc), f"{r.gpu_hours:.2f}")
    console.print(table)
    console.print(times)
    if report.eta_seconds is not None:
        console.print(f"campaign: {_eta(report.eta_seconds, report.eta_utc)}, with {report.parallel} job(s) at once "
                      f"and {duration(report.final_seconds)} for ensemble + leaderboard", markup=False)
    elif report.eta_note:
        console.print(f"campaign ETA: {report.eta_note}", markup=False)
    if not report.slurm_answered:
        console.print("SLURM did not answer (scontrol show job failed): states are unknown; "
                      "progress is from the files.")
