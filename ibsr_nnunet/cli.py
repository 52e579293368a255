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
def demo(
    ctx: typer.Context,
    subjects: int = typer.Option(8, "--subjects", help="Phantom subjects to generate."),
    jobs: int = typer.Option(0, "--jobs", help="Parallel processes (0 = all available cores)."),
) -> None:
    """The pipeline on embedded synthetic data: phantom -> convert (later steps arrive with their issues)."""
    from .convert import ConvertOptions, convert as run_convert
    from .phantom import write_phantoms

    ws = workspace_of(ctx)
    ws.ensure_writable()
    source = ws.root / "demo-source"
    with progress_bar() as bar:
        task = bar.add_task("phantom", total=subjects)
        write_phantoms(source, subjects, "misa", "small", seed=0, on_subject_done=lambda _: bar.advance(task))
        convert_task = bar.add_task("convert", total=None)
        result = run_convert(source, ws, ConvertOptions(jobs=jobs, force=True),
                             on_start=lambda n: bar.update(convert_task, total=n),
                             on_case_done=lambda _: bar.advance(convert_task))
    split = result.manifest["split"]
    table = Table(title="ibsr-nnunet demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("phantom", f"{subjects} subjects, MISA layout: {source}")
    table.add_row("convert", f"{result.dataset} ({len(split['train'])} train, {len(split['heldout'])} held out, "
                             f"{len(split['test'])} test; {split['folds']} folds)")
    for step in ("plan", "train", "ensemble", "baselines", "evaluate", "leaderboard"):
        table.add_row(step, "[dim]not built yet[/]")
    console.print(table)


# Command groups in their own modules register themselves on `app` (import them after `app` exists).
from . import cli_baseline, cli_slurm  # noqa: E402,F401


def main() -> None:
    app()
