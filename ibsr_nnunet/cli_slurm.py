"""`ibsr-nnunet submit|status`: the SLURM campaign (rendering in sbatch.py, SLURM calls in campaign.py)."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .cli import app, console, refusals, workspace_of
from .errors import InputError


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option} {text!r} must be comma-separated numbers, e.g. 0,1,2,3,4.") from None
    if not values:
        raise InputError(f"{option} is empty; give at least one, e.g. 0,1,2,3,4.")
    return values


@app.command()
@refusals
def submit(
    ctx: typer.Context,
    configs: str = typer.Option("2d,3d_fullres", "--configs", help="nnU-Net configurations: one array job each ('' for none)."),
    folds: str = typer.Option("0,1,2,3,4", "--folds", help="Folds: the array indices of every configuration."),
    baselines: str = typer.Option("", "--baselines", help="Baseline jobs as MODEL__LOSS, comma-separated, e.g. unet2d__dice_ce."),
    epochs: int = typer.Option(1000, "--epochs", help="Epochs of every training job."),
    iterations: int = typer.Option(250, "--iterations-per-epoch", help="Iterations per epoch of every training job."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu, passed to every job."),
    partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition."),
    account: Optional[str] = typer.Option(None, "--account", help="SLURM account."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Time limit of each job run, e.g. 24:00:00 (a requeued run gets it again)."),
    gpus_per_job: Optional[int] = typer.Option(None, "--gpus-per-job", help="GPUs per job (default 1; 0 = CPU-only cluster, no GPU request)."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", help="CPUs per job (default 8)."),
    mem: Optional[str] = typer.Option(None, "--mem", help="Memory per job, e.g. 32G (default: the partition's)."),
    signal_grace: Optional[int] = typer.Option(None, "--signal-grace", help="Seconds before the time limit that USR1 asks a job to save and requeue (default 600)."),
    extra_sbatch: Optional[List[str]] = typer.Option(None, "--extra-sbatch", help="Another #SBATCH option, e.g. --qos=long (repeatable)."),
    config_file: Optional[Path] = typer.Option(None, "--config-file", help="TOML with these resource settings (partition, account, time, gpus_per_job, gpu_option, cpus_per_task, mem, signal_grace, extra_sbatch); options win."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the scripts and sbatch command lines; submit nothing."),
) -> None:
    """Submit the campaign: nnU-Net fold arrays, baselines, then ensemble + leaderboard once all succeeded."""
    from . import campaign
    from .sbatch import resources_from

    ws = workspace_of(ctx)
    resources = resources_from(config_file, partition=partition, account=account, time=time_limit,
                               gpus_per_job=gpus_per_job, cpus_per_task=cpus_per_task, mem=mem,
                               signal_grace=signal_grace, extra_sbatch=extra_sbatch)
    plan = campaign.SubmitPlan(
        configs=tuple(c.strip() for c in configs.split(",") if c.strip()), folds=_ints(folds, "--folds"),
        baselines=campaign.parse_baselines(baselines), epochs=epochs, iterations=iterations, device=device,
        resources=resources, dry_run=dry_run)
    result = campaign.submit(ws, plan, say=console.print)
    if dry_run:
        for sub in result.submitted:  # verbatim (no rich wrapping): what would be written and run
            typer.echo(f"# ===== {sub.kind} {sub.name}: {sub.script} =====")
            typer.echo(sub.text, nl=False)
            typer.echo(f"# ===== sbatch command line =====\n{shlex.join(sub.argv)}")
    for line in result.skipped:
        console.print(f"not submitted: {line}", markup=False)
    if dry_run:
        console.print(f"dry run: {len(result.submitted)} job(s) would be submitted; nothing was.")
    elif result.submitted:
        console.print(f"recorded in {campaign.jobs_file(ws)}; follow with `ibsr-nnunet status`", markup=False)
    else:
        console.print("nothing to submit: every job is finished, queued or running.")


def _number(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@app.command()
@refusals
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Every fold, baseline and the final job: SLURM state, restarts, epochs, last pseudo-Dice, finished."""
    from . import campaign

    ws = workspace_of(ctx)
    rows, answered = campaign.status(ws)
    if as_json:
        print(json.dumps({"workspace": str(ws.root), "slurm_answered": answered, "jobs": [asdict(r) for r in rows]},
                         indent=2))
        return
    if not rows:
        console.print(f"no campaign recorded in {campaign.jobs_file(ws)}: run `ibsr-nnunet submit` first.", markup=False)
        return
    table = Table(title=f"{ws.dataset_name}: SLURM campaign")
    for column in ("job", "fold", "SLURM job", "state", "restarts", "epoch", "pseudo-Dice", "val loss", "finished"):
        table.add_column(column)
    for r in rows:
        state = r.state + (f" ({r.reason})" if r.reason and r.reason != "None" else "")
        epoch = f"{r.epochs_done}/{r.epochs_total}" if r.epochs_done is not None else "-"
        finished = "yes" if r.finished else "no"
        if r.validation_dice is not None:
            finished += f" (val Dice {r.validation_dice:.4f})"
        name = {"fold": f"nnU-Net {r.name}", "baseline": f"baseline {r.name}", "final": "ensemble + leaderboard"}[r.kind]
        table.add_row(name, "-" if r.fold is None else str(r.fold), r.job_id or "-", state,
                      "-" if r.restarts is None else str(r.restarts), epoch, _number(r.pseudo_dice),
                      _number(r.val_loss), finished)
    console.print(table)
    if not answered:
        console.print("SLURM did not answer (scontrol show job failed): states are unknown; progress is from the files.")
