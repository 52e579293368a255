"""`demo`: the whole pipeline on the embedded phantom (or a real tree), each step through the real command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..core.vocabulary import TISSUES
from .common import Device, DeviceOption, JobsOption, console, cores, progress_bar, refusals, stage_app, workspace_of

app = stage_app("The whole pipeline in one command.")


@app.command()
@refusals
def demo(
    ctx: typer.Context,
    source: Annotated[Optional[Path], typer.Option(
        "--source", help="A real IBSR18 tree instead of the embedded phantom (longer budgets).")] = None,
    device: DeviceOption = Device.auto,
    jobs: JobsOption = 0,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", min=1, help="nnU-Net epochs per fold (phantom 3, real 20).")] = None,
    iterations: Annotated[Optional[int], typer.Option(
        "--iterations-per-epoch", min=1, help="nnU-Net iterations per epoch (phantom 10, real 50).")] = None,
    baseline_minutes: Annotated[Optional[float], typer.Option(
        "--baseline-minutes",
        help="A wall-time budget per baseline instead of its iterations (phantom: 8 × 20, real: 5 × 200).")] = None,
) -> None:
    """The whole pipeline: convert, plan, train 2d + 3d_fullres (phantom: fold 0, real tree: folds 0-1), ensemble,
    baselines, leaderboard."""
    import pandas as pd

    from ..demo import budget_for, run_demo

    budget = budget_for(source, epochs=epochs, iterations=iterations, baseline_minutes=baseline_minutes)
    ws = workspace_of(ctx)
    with progress_bar() as bar:
        task = bar.add_task("demo", total=None)

        def on_step(step, index, total):
            bar.update(task, total=total, completed=index, description=f"demo: {step.name}")

        result = run_demo(ws, source, budget, device=device.value, jobs=cores(jobs), on_step=on_step)
        bar.update(task, completed=len(result.steps), description="demo: done")
    table = Table(title=f"ibsr-nnunet demo: {result.seconds / 60:.1f} min in {ws.root}")
    for column in ("step", "seconds", "log (the command and its output)"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for step in result.steps:
        table.add_row(step.name, f"{step.seconds:.0f}", str(step.log.relative_to(ws.root)))
    console.print(table)
    board = pd.read_csv(ws.leaderboard)
    ranking = Table(title="leaderboard (held-out cases)")
    for column in ("rank", "model", "mean Dice", *TISSUES.values()):
        ranking.add_column(column, justify="left" if column == "model" else "right")
    for _, row in board.iterrows():
        ranking.add_row(str(row["rank"]), row["model"], f"{row['mean_dice']:.3f}",
                        *(f"{row[f'{t}_dice_mean']:.3f}" for t in TISSUES.values()))
    console.print(ranking)
    console.print(f"leaderboard: {ws.leaderboard}\nfigures: {ws.figures}\npredictions: {ws.predictions}\n"
                  f"nnU-Net results: {ws.results_dataset}\nbaselines: {ws.baselines}\n"
                  f"step logs: {ws.root / 'demo-logs'}")
