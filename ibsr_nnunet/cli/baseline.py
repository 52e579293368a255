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
    console,
    progress_bar,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("Hand-built PyTorch baselines: train, then predict the held-out and test cases.")
ModelOption = Annotated[BaselineModel, typer.Option("--model", help="Baseline network.")]
LossOption = Annotated[Loss, typer.Option("--loss", help="Training loss.")]


@app.command("train")
@refusals
def train_command(
    ctx: typer.Context,
    model: Annotated[Optional[BaselineModel], typer.Option(
        "--model", help="Baseline network (default unet2d).")] = None,
    loss: Annotated[Optional[Loss], typer.Option("--loss", help="Training loss (default dice_ce).")] = None,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-time budget, summed across resumes."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Epoch budget (default 100 when --minutes is not given)."),
    iterations: Optional[int] = typer.Option(None, "--iterations-per-epoch", help="Training iterations per epoch."),
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
        device=device and device.value, schedule=schedule and schedule.value, minutes=minutes, epochs=epochs,
        iterations_per_epoch=iterations, batch_size=batch_size, lr=lr, width=width, depth=depth, dropout=dropout,
        patch_size=patch_size, augment=augment, appearance=appearance, patience=patience, seed=seed,
        threads=threads)
    model, loss = options.model, options.loss
    folder = run_dir(ws, model, loss)
    with progress_bar() as bar:
        task = bar.add_task(f"{model} + {loss}", total=None)

        def start(first_epoch: int, total: Optional[int]) -> None:
            if total:
                bar.update(task, total=total * options.iterations_per_epoch,
                           completed=first_epoch * options.iterations_per_epoch)
            if first_epoch:
                bar.console.print(f"resuming {folder} at epoch {first_epoch}")

        def epoch_done(row: dict) -> None:
            bar.console.print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                              f"val loss {row['val_loss']:.4f}, val Dice {row['val_dice']:.4f}, lr {row['lr']}")

        result = train_in_workspace(ws, options, archive_stale=archive_stale, on_epoch=epoch_done,
                                    on_iteration=lambda: bar.advance(task), on_start=start, tracking=tracking,
                                    say=bar.console.print)
    if result.status == "already finished":
        console.print(f"{model} + {loss} is already finished ({result.epochs_done} epochs): {folder}")
        return
    console.print(f"{model} + {loss} finished after {result.epochs_done} epochs "
                  f"({'resumed at epoch ' + str(result.start_epoch) if result.start_epoch else 'from scratch'}): "
                  f"best validation loss {result.best_val_loss:.4f}, Dice {result.best_val_dice:.4f}, "
                  f"{result.train_seconds:.0f} s in all; {folder}")


@app.command("predict")
@refusals
def predict_command(
    ctx: typer.Context,
    model: ModelOption = BaselineModel.unet2d,
    loss: LossOption = Loss.dice_ce,
    device: DeviceOption = Device.auto,
    overlap: float = typer.Option(0.5, "--overlap", help="Fraction shared by neighbouring sliding windows."),
) -> None:
    """Predict every held-out and test case with a trained baseline into <workspace>/predictions/<model>__<loss>/."""
    from baselines.registry import baseline_name, check_baseline_name
    from baselines.workspace import predict_in_workspace

    from ..core.devices import torch_device
    from ..core.errors import InputError
    from ..models import load_model

    model, loss, device = model.value, loss.value, device.value
    check_baseline_name(baseline_name(model, loss), "--model/--loss")  # it names a workspace folder
    torch_device(device)
    fraction("--overlap", overlap, with_zero=True)
    ws = workspace_of(ctx)
    if why := load_model(ws, baseline_name(model, loss)).refusal(then="predict"):
        raise InputError(why)
    total = sum(len(ws.cases(role)) for role in ("heldout", "test"))
    kept = []
    with progress_bar() as bar:
        task = bar.add_task(f"predict {model} + {loss}", total=total)

        def case_done(case: str, skipped: bool) -> None:
            if skipped:
                kept.append(case)
            bar.advance(task)

        out = predict_in_workspace(ws, model, loss, device=device, overlap=overlap, on_case=case_done,
                                   say=bar.console.print)
    note = f" ({len(kept)} already up to date)" if kept else ""
    console.print(f"wrote {total} predictions{note} to {out}")
