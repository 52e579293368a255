"""The `ibsr-nnunet` command line: parse, call one function, render its result."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import InputError
from .workspace import WORKSPACE_ENV, Workspace

app = typer.Typer(
    help="IBSR18 brain-tissue segmentation (CSF, GM, WM) with nnU-Net v2 on SLURM, ranked against baselines.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def refusals(command):
    """Turn an InputError into its one sentence on stderr and exit code 1."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as err:
            errors.print(f"[bold red]error:[/] {err}", soft_wrap=True)
            raise typer.Exit(1) from None
    return wrapper


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def workspace_of(ctx: typer.Context, dataset_id: Optional[int] = None) -> Workspace:
    ws = Workspace.open(ctx.obj["workspace"], dataset_id)
    ws.export_env()
    return ws


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Optional[Path] = typer.Option(
        None, "--workspace", envvar=WORKSPACE_ENV, help="Folder that holds everything (default ./ibsr-workspace)."),
) -> None:
    ctx.obj = {"workspace": workspace}


@app.command()
@refusals
def phantom(
    out: Path = typer.Argument(..., help="Folder to write the synthetic subjects into."),
    subjects: int = typer.Option(6, "--subjects", help="How many subjects."),
    layout: str = typer.Option("misa", "--layout", help="misa | nitrc | analyze"),
    size: str = typer.Option("small", "--size", help="small (64×32×64) | full (256×128×256)"),
    seed: int = typer.Option(0, "--seed", help="Same seed, same subjects."),
) -> None:
    """Write synthetic IBSR-like subjects in one of the source layouts."""
    from .phantom import write_phantoms

    with progress_bar() as bar:
        task = bar.add_task(f"phantom {layout}/{size}", total=subjects)
        images = write_phantoms(out, subjects, layout, size, seed, on_subject_done=lambda _: bar.advance(task))
    console.print(f"wrote {len(images)} {size} phantom subjects in the {layout} layout under {out}")


@app.command()
@refusals
def convert(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="The IBSR18 folder as you have it."),
    dataset_id: int = typer.Option(501, "--dataset-id", help="nnU-Net dataset ID."),
    layout: str = typer.Option("auto", "--layout", help="auto | misa | nitrc | analyze"),
    label_map: Optional[str] = typer.Option(
        None, "--label-map", help="Explicit coding, e.g. 128=CSF,192=GM,254=WM (default: recognise known codings)."),
    fill: bool = typer.Option(False, "--fill", help="NITRC layouts: use *_segTRI_fill_ana instead of *_segTRI_ana."),
    n4: bool = typer.Option(False, "--n4", help="N4 bias-field correction (SimpleITK)."),
    denoise: bool = typer.Option(False, "--denoise", help="Curvature anisotropic diffusion (SimpleITK)."),
    heldout_fraction: float = typer.Option(
        0.2, "--heldout-fraction", help="Share of labelled subjects held out when the source has no Validation_Set."),
    jobs: int = typer.Option(0, "--jobs", help="Parallel processes (0 = all available cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a different dataset already under this ID."),
) -> None:
    """Convert an IBSR18 tree into nnU-Net v2's raw layout, with a correct 4-class dataset.json."""
    from .convert import ConvertOptions, convert as run_convert
    from .labels import parse_label_map
    from .preprocess import Preprocessing

    options = ConvertOptions(
        dataset_id=dataset_id, layout=layout, label_map=parse_label_map(label_map) if label_map else None,
        fill=fill, preprocessing=Preprocessing(n4=n4, denoise=denoise), heldout_fraction=heldout_fraction,
        jobs=jobs, force=force,
    )
    ws = workspace_of(ctx, dataset_id)
    with progress_bar() as bar:
        task = bar.add_task("convert", total=None)
        result = run_convert(source, ws, options, on_start=lambda n: bar.update(task, total=n),
                             on_case_done=lambda _: bar.advance(task))
    manifest = result.manifest
    if result.up_to_date:
        console.print(f"{result.dataset} is already up to date with {source}: nothing to do.")
        return
    split = manifest["split"]
    table = Table(title=f"{manifest['dataset']} ({manifest['layout']} layout)")
    for column in ("role", "subjects", "folder"):
        table.add_column(column)
    table.add_row("train", ", ".join(split["train"]), "imagesTr + labelsTr")
    table.add_row("held out", ", ".join(split["heldout"]), "imagesTs + labelsTs")
    table.add_row("test", ", ".join(split["test"]) or "-", "imagesTs")
    console.print(table)
    console.print(f"held-out policy: {split['policy']}; {split['folds']} cross-validation folds")
    console.print(f"wrote {result.dataset}")


@app.command()
@refusals
def plan(
    ctx: typer.Context,
    configs: str = typer.Option("2d,3d_fullres", "--configs", help="Comma-separated nnU-Net configurations."),
    jobs: int = typer.Option(0, "--jobs", help="Processes for fingerprinting and preprocessing (0 = all cores)."),
    force: bool = typer.Option(False, "--force", help="Plan and preprocess again even when up to date."),
) -> None:
    """nnU-Net fingerprint, plans and preprocessing for the workspace's dataset."""
    from . import nnunet
    from .convert import available_cores

    ws = workspace_of(ctx)
    cores = jobs or available_cores()
    nnunet.configure(ws, cores)
    with console.status("nnU-Net: fingerprint, plans, preprocessing"):
        result = nnunet.plan(ws, tuple(c.strip() for c in configs.split(",") if c.strip()), cores, force)
    table = Table(title=f"{ws.dataset_name}: nnU-Net plans" + (" (up to date, nothing redone)" if result.up_to_date else ""))
    for column in ("configuration", "patch size", "batch size", "spacing (mm)", "stages", "median shape"):
        table.add_column(column)
    for name, c in result.configurations.items():
        table.add_row(name, "×".join(map(str, c["patch_size"])), str(c["batch_size"]),
                      "×".join(f"{s:g}" for s in c["spacing"]), str(c["stages"]), "×".join(map(str, c["median_shape"])))
    console.print(table)
    for name in result.dropped:
        console.print(f"{name}: not planned — nnU-Net drops it when the image is too small to need a low-resolution stage.")


@app.command()
@refusals
def train(
    ctx: typer.Context,
    fold: int = typer.Option(..., "--fold", help="Cross-validation fold."),
    config: str = typer.Option(..., "--config", help="2d | 3d_fullres"),
    epochs: int = typer.Option(1000, "--epochs", help="Epochs (a short schedule gets its own trainer name)."),
    iterations: int = typer.Option(250, "--iterations-per-epoch", help="Training iterations per epoch."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    save_every: int = typer.Option(1, "--save-every", help="Write a checkpoint every N epochs."),
) -> None:
    """Train one fold; resumes by itself, and exits 75 after saving when SIGUSR1/SIGTERM asks it to stop."""
    from . import nnunet
    from .convert import available_cores

    ws = workspace_of(ctx)
    nnunet.configure(ws, available_cores())
    result = nnunet.train(ws, config, fold, epochs, iterations, device, save_every, say=console.print)
    if result.status == "already finished":
        console.print(f"{config} fold {fold} is already finished: {result.fold_folder}")
        return
    start = f"resumed from {result.resumed_from} at epoch {result.start_epoch}" if result.resumed_from else "from scratch"
    console.print(f"{config} fold {fold} finished ({start}): {result.fold_folder}")


@app.command()
@refusals
def ensemble(
    ctx: typer.Context,
    trainer: Optional[str] = typer.Option(
        None, "--trainer", help="nnU-Net trainer whose folds to use (default: the one with the most finished folds)."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    jobs: int = typer.Option(0, "--jobs", help="Processes for evaluation and ensembling (0 = all available cores)."),
) -> None:
    """Best configuration over 2d and 3d_fullres, then held-out and test predictions of 2d, 3d_fullres and their ensemble."""
    from . import ensemble as ensembling, nnunet
    from .convert import available_cores

    ws = workspace_of(ctx)
    cores = jobs or available_cores()
    nnunet.configure(ws, cores)
    with console.status("nnU-Net: best configuration, predictions, ensemble, postprocessing"):
        result = ensembling.run(ws, trainer, cores, device, say=console.print)
    table = Table(title=f"{ws.dataset_name}: {result.selection.trainer}, folds "
                        f"{', '.join(map(str, result.selection.folds))}")
    for column in ("model", "cross-validation Dice", "predictions"):
        table.add_column(column)
    for model, folder in result.predictions.items():
        mark = " [bold green](best)[/]" if model == result.winner else ""
        table.add_row(model + mark, f"{result.results[model]:.4f}", f"{len(list(folder.glob('*.nii.gz')))} cases in {folder.relative_to(ws.root)}")
    console.print(table)
    console.print(f"winner: {result.reason}")
    console.print(f"recorded in {result.record} ({result.seconds:.0f} s)")


@app.command()
@refusals
def evaluate(
    ctx: typer.Context,
    predictions: Path = typer.Option(..., "--predictions", help="Folder of <case>.nii.gz predictions."),
    name: str = typer.Option(..., "--name", help="Model name for the leaderboard, e.g. unet2d__dice_ce."),
    jobs: int = typer.Option(0, "--jobs", help="Parallel processes (0 = all available cores)."),
) -> None:
    """Score predictions on every held-out case: Dice, HD, HD95 and AVD per tissue class."""
    from .convert import available_cores
    from .evaluate import evaluate as run_evaluate

    ws = workspace_of(ctx)
    with progress_bar() as bar:
        task = bar.add_task(f"evaluate {name}", total=None)
        result = run_evaluate(ws, predictions, name, jobs or available_cores(),
                              on_case_done=lambda _: bar.advance(task))
    summary = result.table.groupby("class", sort=False)[["dice", "hd", "hd95", "avd"]].agg(["mean", "std"])
    table = Table(title=f"{name}: {result.table['case'].nunique()} held-out cases")
    for column in ("class", "Dice", "HD (mm)", "HD95 (mm)", "AVD"):
        table.add_column(column, justify="right")
    for tissue, row in summary.iterrows():
        table.add_row(tissue, *(f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}" for m in ("dice", "hd", "hd95", "avd")))
    console.print(table)
    console.print(f"wrote {result.csv} and {result.summary.name} ({result.seconds:.1f} s)")


@app.command()
@refusals
def leaderboard(
    ctx: typer.Context,
    jobs: int = typer.Option(0, "--jobs", help="Parallel processes for evaluation (0 = all available cores)."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the PNG figures."),
) -> None:
    """Evaluate every prediction set not yet scored, rank all models in leaderboard.csv, draw the figures."""
    from .convert import available_cores
    from .evaluate import references
    from .leaderboard import build, prediction_sets
    from .metrics import CLASSES

    ws = workspace_of(ctx)
    with console.status("evaluating") as status:
        result = build(ws, jobs or available_cores(), on_model=lambda m: status.update(f"evaluating {m}"))
    board = result.board
    table = Table(title=f"leaderboard — {result.split}")
    for column in ("rank", "model", "mean Dice", *(f"{c} Dice" for c in CLASSES.values()),
                   "HD95 mm (CSF/GM/WM)", "AVD (CSF/GM/WM)", "train"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for _, row in board.iterrows():
        table.add_row(
            str(row["rank"]), row["model"], f"{row['mean_dice']:.4f}",
            *(f"{row[f'{c}_dice_mean']:.3f}±{row[f'{c}_dice_std']:.3f}" for c in CLASSES.values()),
            "/".join(f"{row[f'{c}_hd95_mean']:.1f}" for c in CLASSES.values()),
            "/".join(f"{row[f'{c}_avd_mean']:.3f}" for c in CLASSES.values()),
            "-" if row["train_seconds"] != row["train_seconds"] else f"{row['train_seconds'] / 60:.1f} min")
    console.print(table)
    console.print(f"wrote {result.csv}" + (f" (evaluated now: {', '.join(result.evaluated_now)})" if result.evaluated_now else ""))
    if figures:
        from . import figures as draw

        order = board["model"].tolist()
        drawn = [draw.dice_boxplots(result.per_case, order, ws.figures / "dice_boxplot.png")]
        case, reference = next(iter(references(ws).items()))
        sets = prediction_sets(ws)
        drawn.append(draw.overlays(ws.raw_dataset / "imagesTs" / f"{case}_0000.nii.gz", reference,
                                   {m: sets[m] / f"{case}.nii.gz" for m in order if m in sets},
                                   ws.figures / f"overlay_{case}.png"))
        drawn.append(draw.curves(ws, order, ws.figures / "training_curves.png"))
        console.print("figures: " + ", ".join(str(p) for p in drawn if p))


@app.command()
@refusals
def segment(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="T1 scans (.nii, .nii.gz, Analyze .hdr/.img) or folders of them."),
    output: Path = typer.Option(..., "--output", help="Folder for the label maps and volumes.csv."),
    model: Optional[str] = typer.Option(
        None, "--model", help="A leaderboard model, e.g. nnunet_ensemble or unet2d__dice_ce (default: the best)."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    jobs: int = typer.Option(0, "--jobs", help="Processes for nnU-Net's ensembling (0 = all available cores)."),
) -> None:
    """Segment new scans into CSF, GM and WM, and report tissue volumes (mL), fractions and BPF."""
    from .convert import available_cores
    from .segment import segment as run_segment

    ws = workspace_of(ctx)
    if model is None or model.startswith("nnunet_"):
        from . import nnunet

        nnunet.configure(ws, jobs or available_cores())
    with progress_bar() as bar:
        task = bar.add_task("segment", total=None)

        def on_start(chosen, total):
            scores = chosen.scores
            said = (f"held-out mean Dice {scores['mean_dice']:.3f} (CSF {scores['CSF_dice_mean']:.3f}, "
                    f"GM {scores['GM_dice_mean']:.3f}, WM {scores['WM_dice_mean']:.3f}) on {scores['cases']}"
                    if scores else "not on the leaderboard: no held-out scores")
            console.print(f"model: {chosen.name}{' (the leaderboard best)' if model is None else ''}; {said}")
            bar.update(task, total=total, description=f"segment with {chosen.name}")

        result = run_segment(ws, inputs, output, model, device, jobs or available_cores(), on_start,
                             on_scan_done=lambda _: bar.advance(task))
    table = Table(title=f"tissue volumes ({result.model.name})")
    for column in ("scan", "CSF mL", "GM mL", "WM mL", "BPF", "seconds", "warnings"):
        table.add_column(column, justify="left" if column in ("scan", "warnings") else "right")
    for scan in result.scans:
        if scan.error:
            table.add_row(scan.input.name, "-", "-", "-", "-", f"{scan.seconds:.1f}", f"[red]failed: {scan.error}[/]")
        else:
            v = scan.volumes
            table.add_row(scan.input.name, f"{v['CSF_ml']:.1f}", f"{v['GM_ml']:.1f}", f"{v['WM_ml']:.1f}",
                          f"{v['BPF']:.3f}", f"{scan.seconds:.1f}", "; ".join(scan.warnings))
    console.print(table)
    done = [s for s in result.scans if not s.error]
    if done:
        console.print(f"{len(done)} label maps in {output}; {sum(s.seconds for s in done) / len(done):.1f} s per scan")
    console.print(f"wrote {result.csv}")
    if result.failed:
        errors.print(f"[bold red]error:[/] {len(result.failed)} of {len(result.scans)} scans failed "
                     f"(first: {result.failed[0].error})", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@refusals
def demo(
    ctx: typer.Context,
    source: Optional[Path] = typer.Option(
        None, "--source", help="A real IBSR18 tree instead of the embedded phantom (longer budgets)."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    jobs: int = typer.Option(0, "--jobs", help="Parallel processes (0 = all available cores)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="nnU-Net epochs per fold (phantom 5, real 20)."),
    iterations: Optional[int] = typer.Option(
        None, "--iterations-per-epoch", help="nnU-Net iterations per epoch (phantom 12, real 50)."),
    baseline_minutes: Optional[float] = typer.Option(
        None, "--baseline-minutes", help="Training budget of each baseline (phantom: 8 short epochs, real: 12 min)."),
) -> None:
    """The whole pipeline: convert, plan, train 2d + 3d_fullres (2 folds), ensemble, baselines, leaderboard."""
    import dataclasses

    import pandas as pd

    from . import demo as pipeline
    from .convert import available_cores

    budget = pipeline.REAL if source else pipeline.SYNTHETIC
    overrides = {k: v for k, v in {"epochs": epochs, "iterations": iterations,
                                   "baseline_minutes": baseline_minutes}.items() if v is not None}
    if baseline_minutes is not None:
        overrides["baseline_epochs"] = None
    budget = dataclasses.replace(budget, **overrides)
    ws = workspace_of(ctx)
    with progress_bar() as bar:
        task = bar.add_task("demo", total=None)

        def on_step(step, index, total):
            bar.update(task, total=total, completed=index, description=f"demo: {step.name}")

        result = pipeline.run(ws, source, budget, device, jobs or available_cores(), on_step)
        bar.update(task, completed=len(result.steps), description="demo: done")
    table = Table(title=f"ibsr-nnunet demo: {result.seconds / 60:.1f} min in {ws.root}")
    for column in ("step", "seconds", "log (the command and its output)"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for step in result.steps:
        table.add_row(step.name, f"{step.seconds:.0f}", str(step.log.relative_to(ws.root)))
    console.print(table)
    board = pd.read_csv(ws.leaderboard)
    ranking = Table(title="leaderboard (held-out cases)")
    for column in ("rank", "model", "mean Dice", "CSF", "GM", "WM"):
        ranking.add_column(column, justify="left" if column == "model" else "right")
    for _, row in board.iterrows():
        ranking.add_row(str(row["rank"]), row["model"], f"{row['mean_dice']:.3f}",
                        *(f"{row[f'{c}_dice_mean']:.3f}" for c in ("CSF", "GM", "WM")))
    console.print(ranking)
    console.print(f"leaderboard: {ws.leaderboard}\nfigures: {ws.figures}\npredictions: {ws.predictions}\n"
                  f"nnU-Net results: {ws.results_dataset}\nbaselines: {ws.baselines}\nstep logs: {ws.root / 'demo-logs'}")


# Command groups in their own modules register themselves on `app` (import them after `app` exists).
from . import cli_baseline, cli_slurm  # noqa: E402,F401


def main() -> None:
    app()
