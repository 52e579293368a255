"""`plan`, `train` and `ensemble`: nnU-Net's pipeline on the workspace's dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..core.tracking import DEFAULT_PROJECT, Tracking
from ..core.vocabulary import CONFIGURATIONS, DEFAULT_PRESET
from ..nnunet.paths import FULL_EPOCHS, FULL_ITERATIONS
from ..nnunet.presets import preset_named, presets_named
from ..nnunet.train import COMPILE_DEFAULT
from .common import (
    ArchiveStaleOption,
    Configuration,
    Device,
    DeviceOption,
    JobsOption,
    PresetChoice,
    PresetOption,
    PresetsOption,
    TrackModeOption,
    TrackOption,
    TrackProjectOption,
    configs_list,
    console,
    cores,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("nnU-Net: plan, train folds, ensemble.")


@app.command()
@refusals
def plan(
    ctx: typer.Context,
    configs: Annotated[str, typer.Option(
        "--configs", callback=configs_list, help="Comma-separated nnU-Net configurations.")] = ",".join(CONFIGURATIONS),
    presets: PresetsOption = DEFAULT_PRESET,
    jobs: JobsOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Plan and preprocess again even when up to date.")] = False,
) -> None:
    """nnU-Net fingerprint, plans and preprocessing for the workspace's dataset."""
    from ..nnunet.environment import configure
    from ..nnunet.plan import plan as run_plan

    ws = workspace_of(ctx)
    configure(ws, cores(jobs))
    with console.status("nnU-Net: fingerprint, plans, preprocessing"):
        results = run_plan(ws, tuple(configs), presets=presets_named(presets), jobs=cores(jobs), force=force,
                           say=console.print)
    for result in results:
        spent = "" if result.up_to_date else f" in {result.seconds:.1f} s"
        networks = ", ".join(sorted({c["network"] for c in result.configurations.values()}))
        table = Table(title=f"{ws.dataset_name}: nnU-Net plans, preset {result.preset.name} ({result.preset.plans}, "
                            f"{networks})")
        for column in ("configuration", "patch size", "batch size", "spacing (mm)", "stages", "median shape"):
            table.add_column(column)
        for name, c in result.configurations.items():
            table.add_row(name, "×".join(map(str, c["patch_size"])), str(c["batch_size"]),
                          "×".join(f"{s:g}" for s in c["spacing"]), str(c["stages"]),
                          "×".join(map(str, c["median_shape"])))
        console.print(table)
        console.print(f"preset {result.preset.name}: {result.done}{spent}")
    for name in results[0].dropped:
        console.print(f"{name}: not planned — nnU-Net drops it when the image is too small to need a "
                      "low-resolution stage.")


@app.command()
@refusals
def train(
    ctx: typer.Context,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Cross-validation fold.")],
    config: Annotated[Configuration, typer.Option("--config", help="nnU-Net configuration.")],
    preset: PresetOption = PresetChoice.default,
    epochs: Annotated[int, typer.Option(
        "--epochs", min=1, help="Epochs (a short schedule gets its own trainer name).")] = FULL_EPOCHS,
    iterations: Annotated[int, typer.Option(
        "--iterations-per-epoch", min=1, help="Training iterations per epoch.")] = FULL_ITERATIONS,
    device: DeviceOption = Device.auto,
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="Write a checkpoint every N epochs.")] = 1,
    archive_stale: ArchiveStaleOption = False,
    stage_data: Annotated[bool, typer.Option(
        "--stage-data", help="Copy the preprocessed data to node-local disk first and read it there "
                             "(results stay in the workspace).")] = False,
    local_scratch: Annotated[Optional[Path], typer.Option(
        "--local-scratch", help="Node-local folder for --stage-data (default: $SLURM_TMPDIR, else $TMPDIR).")] = None,
    compile_network: Annotated[Optional[bool], typer.Option(
        "--compile/--no-compile", help="nnU-Net's torch.compile on CUDA (never on CPU); a requeued run compiles again. "
        f"Default: nnUNet_compile when set, else {'on' if COMPILE_DEFAULT else 'off'}.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", min=0, help="Seed the weights, the batches and their augmentation: the same seed on the same "
        "software and CPU trains the same fold, resumed or not. Default: unseeded, as nnU-Net.")] = None,
    track: TrackOption = None,
    track_mode: TrackModeOption = "offline",
    track_project: TrackProjectOption = DEFAULT_PROJECT,
) -> None:
    """Train one fold; resumes by itself, and exits 75 after saving when SIGUSR1/SIGTERM asks it to stop (76 when
    two runs in a row were stopped by SIGUSR1 before finishing an epoch)."""
    from ..nnunet.environment import configure
    from ..nnunet.train import train as run_train

    ws = workspace_of(ctx)
    configure(ws, cores(0))
    result = run_train(ws, config.value, fold, epochs=epochs, iterations=iterations, device=device.value,
                       save_every=save_every, archive_stale=archive_stale, stage_data=stage_data,
                       local_scratch=local_scratch, compile=compile_network, seed=seed,
                       tracking=Tracking(track, track_mode, track_project), preset=preset_named(preset.value),
                       say=console.print)
    what = f"{config.value} fold {fold}" + ("" if preset.value == DEFAULT_PRESET else f" ({preset.value})")
    if result.status == "already finished":
        console.print(f"{what} is already finished: {result.folder}")
        return
    start = (f"resumed from {result.resumed_from} at epoch {result.start_epoch}" if result.resumed_from
             else "from scratch")
    console.print(f"{what} finished ({start}): {result.folder}")


@app.command()
@refusals
def ensemble(
    ctx: typer.Context,
    trainer: Annotated[Optional[str], typer.Option(
        "--trainer",
        help="nnU-Net trainer whose folds to use (default: the one with the most finished folds).")] = None,
    presets: Annotated[Optional[str], typer.Option(
        "--presets", help="Search only these plans presets, comma-separated (default: every preset with finished "
                          "folds).")] = None,
    device: DeviceOption = Device.auto,
    jobs: JobsOption = 0,
) -> None:
    # the docstring is the command's help, shown on one line in `ibsr-nnunet --help`: kept whole, hence the noqa
    """Best configuration over every preset's 2d and 3d_fullres, then held-out and test predictions of each and their ensembles."""  # noqa: E501
    from ..models.ensemble import build_ensemble
    from ..nnunet.environment import configure

    ws = workspace_of(ctx)
    configure(ws, cores(jobs))
    chosen = presets_named(presets) if presets is not None else None
    with console.status("nnU-Net: best configuration, predictions, ensemble, postprocessing"):
        result = build_ensemble(ws, trainer, presets=chosen, jobs=cores(jobs), device=device.value, say=console.print)
    table = Table(title=f"{ws.dataset_name}: {result.selection.trainer}, folds "
                        f"{', '.join(map(str, result.selection.folds))}")
    for column in ("model", "cross-validation Dice", "predictions"):
        table.add_column(column)
    for model, folder in result.predictions.items():
        mark = " [bold green](best)[/]" if model == result.winner else ""
        cases = len(list(folder.glob("*.nii.gz")))
        table.add_row(model + mark, f"{result.results[model]:.4f}", f"{cases} cases in {folder.relative_to(ws.root)}")
    console.print(table)
    console.print(f"winner: {result.reason}")
    console.print(f"recorded in {result.best_configuration} ({result.seconds:.0f} s)")
