"""`evaluate` and `leaderboard`: score prediction sets on the held-out cases and rank every model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core.vocabulary import NSD_TOLERANCE, TISSUES
from .common import JobsOption, console, cores, progress_bar, refusals, stage_app, workspace_of

app = stage_app("Scoring: evaluate prediction sets, rank the models.")

NsdToleranceOption = Annotated[float, typer.Option(
    "--nsd-tolerance", min=0.0, help="Tolerance tau in mm of the normalised surface distance (NSD).")]


@app.command()
@refusals
def evaluate(
    ctx: typer.Context,
    predictions: Annotated[Path, typer.Option("--predictions", help="Folder of <case>.nii.gz predictions.")],
    name: Annotated[str, typer.Option("--name", help="Model name for the leaderboard, e.g. unet2d__dice_ce.")],
    jobs: JobsOption = 0,
    nsd_tolerance: NsdToleranceOption = NSD_TOLERANCE,
) -> None:
    """Score predictions on every held-out case: Dice, HD, HD95, AVD, NSD and volumes per tissue class."""
    from ..evaluation.evaluate import evaluate as run_evaluate

    ws = workspace_of(ctx)
    with progress_bar() as bar:
        task = bar.add_task(f"evaluate {name}", total=None)
        result = run_evaluate(ws, predictions, name, jobs=cores(jobs), nsd_tolerance=nsd_tolerance,
                              on_case_done=lambda _: bar.advance(task))
    table = Table(title=f"{name}: {result.table['case'].nunique()} held-out cases (mean ± standard deviation)")
    for column in ("class", "Dice", "HD (mm)", "HD95 (mm)", "AVD", f"NSD ({nsd_tolerance:g} mm)"):
        table.add_column(column, justify="right")
    for tissue, row in result.per_class.iterrows():
        table.add_row(tissue, *(f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}"
                                for m in ("dice", "hd", "hd95", "avd", "nsd")))
    console.print(table)
    console.print(f"wrote {result.csv} and {result.summary.name} ({result.seconds:.1f} s)")


@app.command()
@refusals
def leaderboard(
    ctx: typer.Context,
    jobs: JobsOption = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw the PNG figures.")] = True,
    nsd_tolerance: NsdToleranceOption = NSD_TOLERANCE,
) -> None:
    """Evaluate every prediction set not yet scored, rank all models in leaderboard.csv, draw the figures."""
    from ..evaluation.leaderboard import build

    ws = workspace_of(ctx)
    with console.status("evaluating") as status:
        result = build(ws, jobs=cores(jobs), nsd_tolerance=nsd_tolerance,
                       on_model=lambda m: status.update(f"evaluating {m}"))
    tissues = list(TISSUES.values())
    table = Table(title=f"leaderboard — {result.split}")
    for column in ("rank", "model", "mean Dice [95% CI]", "#1 share", "p vs #1", *(f"{t} Dice" for t in tissues),
                   "HD95 mm (CSF/GM/WM)", f"NSD {nsd_tolerance:g} mm (CSF/GM/WM)", "vol bias mL (CSF/GM/WM)",
                   "validation Dice", "train"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for _, row in result.board.iterrows():
        table.add_row(
            str(row["rank"]), row["model"], _with_interval(row), _number(row["rank1_share"], "{:.2f}"),
            _versus_best(row),
            *(f"{row[f'{t}_dice_mean']:.3f}±{row[f'{t}_dice_std']:.3f}" for t in tissues),
            "/".join(f"{row[f'{t}_hd95_mean']:.1f}" for t in tissues),
            "/".join(f"{row[f'{t}_nsd_mean']:.3f}" for t in tissues),
            "/".join(f"{row[f'{t}_vol_bias_ml']:+.1f}" for t in tissues),
            _validation(row),
            "-" if row["train_seconds"] != row["train_seconds"] else f"{row['train_seconds'] / 60:.1f} min")
    console.print(table)
    for line in result.notes:
        console.print(line, markup=False)
    now = f" (evaluated now: {', '.join(result.evaluated_now)})" if result.evaluated_now else ""
    console.print(f"wrote {result.csv}{now}")
    if result.redone_line():
        console.print(result.redone_line(), markup=False)
    for line in result.left_out:
        console.print(f"not ranked: {line}", markup=False)
    if figures:
        from ..evaluation.figures import leaderboard_figures

        drawn = leaderboard_figures(ws, result.board, result.per_case)
        console.print("figures: " + ", ".join(map(str, drawn)))


def _number(value: float, form: str) -> str:
    return "-" if value != value else form.format(value)


def _with_interval(row) -> str:
    if row["mean_dice_ci_low"] != row["mean_dice_ci_low"]:
        return f"{row['mean_dice']:.4f}"
    return f"{row['mean_dice']:.4f} [{row['mean_dice_ci_low']:.3f}, {row['mean_dice_ci_high']:.3f}]"


def _versus_best(row) -> str:
    """'≈' where the model cannot be told apart from rank 1 (no test below 5 cases: nothing can)."""
    from ..evaluation.statistics import ALPHA

    if row["rank"] == 1:
        return "rank 1"
    if row["p_vs_best"] != row["p_vs_best"]:
        return "≈ (no test)"
    return f"≈ {row['p_vs_best']:.3f}" if row["p_vs_best"] >= ALPHA else f"{row['p_vs_best']:.3f}"


def _validation(row) -> str:
    """nnU-Net's pooled cross-validation Dice, or a baseline's internal validation Dice (not cross-validation)."""
    if row["cv_dice_mean"] == row["cv_dice_mean"]:
        return f"CV {row['cv_dice_mean']:.3f} (n={int(row['cv_n'])})"
    if row["internal_val_dice"] == row["internal_val_dice"]:
        return f"internal {row['internal_val_dice']:.3f}"
    return "-"
