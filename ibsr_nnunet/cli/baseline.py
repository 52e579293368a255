"""`baseline train|predict`: the hand-built PyTorch baselines (plain PyTorch in baselines/, no nnU-Net)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..core.choices import fraction
from ..core.tracking import DEFAULT_PROJECT, Tracking
from .common import (
    ArchiveStaleOption,
    BaselineModel,
    Device,
    DeviceOption,
    Loss,
    Optimizer,
    Schedule,
    TrackModeOption,
    TrackOption,
    TrackProjectOption,
    View,
    Vote,
    console,
    progress_bar,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("Hand-built PyTorch baselines: train, then predict the held-out and test cases.")
ModelOption = Annotated[BaselineModel, typer.Option("--model", help="Baseline network.")]
LossOption = Annotated[Loss, typer.Option("--loss", help="Training loss.")]
ViewOption = Annotated[View, typer.Option(
    "--view", help="What 2D models slice across: thickest (the axis with the largest spacing, coronal on IBSR; the "
    "default, named MODEL__LOSS) or coronal, axial, sagittal (named MODEL_VIEW__LOSS).")]


@app.command("train")
@refusals
def train_command(
    ctx: typer.Context,
    model: Annotated[Optional[BaselineModel], typer.Option(
        "--model", help="Baseline network (default unet2d).")] = None,
    loss: Annotated[Optional[Loss], typer.Option("--loss", help="Training loss (default dice_ce).")] = None,
    view: ViewOption = View.thickest,
    iterations: Optional[int] = typer.Option(
        None, "--iterations", min=1, help="Budget in training iterations, the same model on any machine (default on "
        "the CPU: 1000 for 2D models, 800 for unet3d; the budgets given replace the default)."),
    minutes: Optional[float] = typer.Option(
        None, "--minutes", help="Wall-time budget, summed across resumes (depends on the machine's speed)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Epoch budget (default 100 on a GPU when no budget is given)."),
    iterations_per_epoch: Optional[int] = typer.Option(
        None, "--iterations-per-epoch", help="Training iterations per epoch."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Patches per iteration."),
    optimizer: Optional[Optimizer] = typer.Option(None, "--optimizer", help="Optimiser (default adam)."),
    lr: Optional[float] = typer.Option(
        None, "--lr", help="Initial learning rate (default: adam 0.003 on CPU, 0.001 on GPU; sgd 0.01; adadelta 1.0)."),
    width: Optional[int] = typer.Option(None, "--width", help="Channels of the first level (doubled per level)."),
    depth: Optional[int] = typer.Option(
        None, "--depth", help="Resolution levels (default 5: four downsamplings and a bottleneck)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout around the bottleneck."),
    patch_size: Optional[int] = typer.Option(
        None, "--patch-size", help="Patch edge in voxels (2D: size², 3D: size³)."),
    schedule: Optional[Schedule] = typer.Option(
        None, "--schedule",
        help="plateau (ReduceLROnPlateau on validation loss; GPU default) or cosine (CPU default)."),
    augment: Optional[bool] = typer.Option(
        None, "--augment/--no-augment", help="Flips, rotation, scale, shear, intensity jitter (CPU default: off)."),
    flip: Optional[bool] = typer.Option(
        None, "--flip/--no-flip", help="Mirror half the patches left-right; test-time mirroring then mirrors that axis "
        "only (CPU default: on)."),
    appearance: Optional[bool] = typer.Option(
        None, "--appearance/--no-appearance",
        help="Gamma, bias field, noise and lower resolution, for scans from elsewhere (default: on)."),
    patience: Optional[int] = typer.Option(
        None, "--patience", help="Stop after this many epochs without a better validation loss (default 10)."),
    device: Annotated[Optional[Device], typer.Option(
        "--device", help="Where to compute: auto (cuda when torch sees a GPU; the default), cuda or cpu.")] = None,
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same split, patches and initialisation "
                                       "(default 0)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=0, help="CPU threads (default 0: 1 or all, whichever trains faster now; a fixed count "
        "trains the same weights on every run, since the thread count changes how float sums round)."),
    archive_stale: ArchiveStaleOption = False,
    track: TrackOption = None,
    track_mode: TrackModeOption = "offline",
    track_project: TrackProjectOption = DEFAULT_PROJECT,
) -> None:
    """Train one baseline; resumes by itself, and exits 75 after saving when SIGUSR1/SIGTERM asks it to stop (76
    when two runs in a row were stopped by SIGUSR1 before finishing an epoch).

    Options left out take the defaults tuned for the device (see baselines.options)."""
    from baselines.options import TrainOptions
    from baselines.run_folder import run_dir
    from baselines.workspace import train_in_workspace

    ws = workspace_of(ctx)
    tracking = Tracking(track, track_mode, track_project)
    options = TrainOptions.for_device(
        model=model and model.value, loss=loss and loss.value, optimizer=optimizer and optimizer.value,
        device=device and device.value, schedule=schedule and schedule.value, view=view.value, minutes=minutes,
        epochs=epochs, iterations=iterations, iterations_per_epoch=iterations_per_epoch, batch_size=batch_size, lr=lr,
        width=width, depth=depth, dropout=dropout, patch_size=patch_size, augment=augment, flip=flip,
        appearance=appearance, patience=patience, seed=seed, threads=threads)
    folder = run_dir(ws, options.model, options.loss, options.view)
    name = folder.name
    with progress_bar() as bar:
        task = bar.add_task(name, total=None)

        def start(first_epoch: int, total: Optional[int]) -> None:
            budget = options.iterations or (total and total * options.iterations_per_epoch)
            if budget:
                bar.update(task, total=budget, completed=first_epoch * options.iterations_per_epoch)
            if first_epoch:
                bar.console.print(f"resuming {folder} at epoch {first_epoch}")

        def epoch_done(row: dict) -> None:
            bar.console.print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                              f"val loss {row['val_loss']:.4f}, val Dice {row['val_dice']:.4f}, lr {row['lr']}")

        result = train_in_workspace(ws, options, archive_stale=archive_stale, on_epoch=epoch_done,
                                    on_iteration=lambda: bar.advance(task), on_start=start, tracking=tracking,
                                    say=bar.console.print)
    if result.status == "already finished":
        console.print(f"{name} is already finished ({result.epochs_done} epochs): {folder}")
        return
    console.print(f"{name} finished after {result.epochs_done} epochs "
                  f"({'resumed at epoch ' + str(result.start_epoch) if result.start_epoch else 'from scratch'}): "
                  f"best validation loss {result.best_val_loss:.4f}, Dice {result.best_val_dice:.4f}, "
                  f"{result.train_seconds:.0f} s in all; {folder}")


@app.command("predict")
@refusals
def predict_command(
    ctx: typer.Context,
    model: ModelOption = BaselineModel.unet2d,
    loss: LossOption = Loss.dice_ce,
    view: ViewOption = View.thickest,
    device: DeviceOption = Device.auto,
    overlap: float = typer.Option(0.5, "--overlap", help="Fraction shared by neighbouring sliding windows."),
) -> None:
    """Predict every held-out and test case with a trained baseline into <workspace>/predictions/<model>__<loss>/."""
    from baselines.registry import baseline_name, check_view
    from baselines.workspace import predict_in_workspace

    from ..core.devices import torch_device
    from ..core.errors import InputError
    from ..models import load_model

    device = device.value
    name = baseline_name(model.value, loss.value, check_view(model.value, view.value))
    torch_device(device)
    fraction("--overlap", overlap, with_zero=True)
    ws = workspace_of(ctx)
    if why := load_model(ws, name).refusal(then="predict"):
        raise InputError(why)
    total = sum(len(ws.cases(role)) for role in ("heldout", "test"))
    kept = []
    with progress_bar() as bar:
        task = bar.add_task(f"predict {name}", total=total)

        def case_done(case: str, skipped: bool) -> None:
            if skipped:
                kept.append(case)
            bar.advance(task)

        out = predict_in_workspace(ws, name, device=device, overlap=overlap, on_case=case_done,
                                   say=bar.console.print)
    note = f" ({len(kept)} already up to date)" if kept else ""
    console.print(f"wrote {total} predictions{note} to {out}")


@app.command("ensemble")
@refusals
def ensemble_command(
    ctx: typer.Context,
    members: str = typer.Option(
        ..., "--members", help="Comma-separated finished baseline runs of this workspace, e.g. "
        "unet2d__dice_ce,unet2d_axial__dice_ce,unet2d_sagittal__dice_ce,unet3d__dice_ce."),
    name: Optional[str] = typer.Option(
        None, "--name", help="The ensemble's model name: baseline_ensemble or baseline_ensemble_SUFFIX (default "
        "baseline_ensemble, or baseline_ensemble_vote with --vote majority)."),
    vote: Annotated[Vote, typer.Option(
        "--vote", help="mean: the class of highest mean probability; majority: each member's labels are one vote, a "
        "tie going to the class of highest mean probability among those tied.")] = Vote.mean,
    device: DeviceOption = Device.auto,
    overlap: float = typer.Option(0.5, "--overlap", help="Fraction shared by neighbouring sliding windows."),
) -> None:
    """Fuse baselines: every held-out and test case predicted by each member on its own grid, then the mean of
    their probabilities (or their majority vote) into <workspace>/predictions/<name>/, a model of its own for
    `leaderboard`, `segment --model` and `export`."""
    from baselines.ensemble import Definition, describe

    from ..core.devices import torch_device
    from ..models.baseline_ensemble import build_baseline_ensemble

    definition = Definition(tuple(m.strip() for m in members.split(",") if m.strip()), vote.value)
    torch_device(device.value)
    fraction("--overlap", overlap, with_zero=True)
    ws = workspace_of(ctx)
    total = sum(len(ws.cases(role)) for role in ("heldout", "test"))
    with progress_bar() as bar:
        task = bar.add_task(f"ensemble: {describe(definition)}", total=total)
        out = build_baseline_ensemble(ws, definition, name, device=device.value, overlap=overlap,
                                      on_case=lambda case: bar.advance(task), say=bar.console.print)
    console.print(f"wrote {total} predictions ({describe(definition)}) to {out}")
