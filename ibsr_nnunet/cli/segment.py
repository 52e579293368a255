"""`segment`: new scans through any trained model, into tissue maps and a volumes table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..core.errors import InputError
from .common import (
    Device,
    DeviceOption,
    JobsOption,
    console,
    cores,
    progress_bar,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("Segment new scans with a trained model.")


@app.command()
@refusals
def segment(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(
        help="T1 scans (.nii, .nii.gz, Analyze .hdr/.img) or folders of them.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the label maps and volumes.csv.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", help="A leaderboard model, e.g. nnunet_ensemble or unet2d__dice_ce (default: the best), or a model "
                        "bundle from `ibsr-nnunet export` (FILE.zip, or the folder it was unpacked into): then no "
                        "workspace is needed.")] = None,
    device: DeviceOption = Device.auto,
    jobs: JobsOption = 0,
    tta: Annotated[Optional[bool], typer.Option(
        "--tta/--no-tta",
        help="Test-time mirroring (default: on for CUDA, off for the CPU, where it costs 2-6x).")] = None,
    step_size: Annotated[float, typer.Option(
        "--step-size", help="Sliding-window step as a fraction of the window (nnU-Net's tile step; a baseline's "
                            "overlap is 1 - step).")] = 0.5,
    soft_volumes: Annotated[bool, typer.Option(
        "--soft-volumes", help="Also report volumes from the model's probabilities (CSF_ml_soft, ...).")] = False,
    qc: Annotated[bool, typer.Option("--qc/--no-qc", help="A QC picture per scan: <name>_qc.png.")] = True,
    qc_sheet: Annotated[bool, typer.Option(
        "--qc-sheet", help="One contact sheet of every scan: qc_sheet.png.")] = False,
    qc_threshold: Annotated[float, typer.Option(
        "--qc-threshold", min=0.0, max=1.0,
        help="Mark scans whose QC score (0-1, volumes.csv qc_score) is below this as to check.")] = 0.5,
    strip: Annotated[bool, typer.Option(
        "--strip", help="Skull-strip each scan first with deepbet (pip install \"ibsr-nnunet[strip]\"): writes "
                        "<name>_brainmask.nii.gz and tiv_ml.")] = False,
    resample: Annotated[bool, typer.Option(
        "--resample/--no-resample",
        help="Baselines: resample a scan whose spacing is more than 1.2x from the training spacing on some axis to "
             "it first (nnU-Net always resamples).")] = True,
) -> None:
    """Segment new scans into CSF, GM and WM, and report tissue volumes (mL), fractions and BPF."""
    from ..nnunet.environment import configure
    from ..segment import SegmentOptions, segment as run_segment
    from ..segment.bundle import install_bundle, is_bundle

    if model is not None and is_bundle(model):  # the bundle is a workspace of its own
        ws, model, _ = install_bundle(Path(model), say=console.print)
        ws.export_env()
    else:
        ws = workspace_of(ctx)
    configure(ws, cores(jobs))
    with progress_bar() as bar:
        task = bar.add_task("segment", total=None)

        def on_start(chosen, total):
            scores = chosen.scores
            said = (f"held-out mean Dice {scores['mean_dice']:.3f} (CSF {scores['CSF_dice_mean']:.3f}, "
                    f"GM {scores['GM_dice_mean']:.3f}, WM {scores['WM_dice_mean']:.3f}) on {scores['cases']}"
                    if scores else "not on the leaderboard: no held-out scores")
            console.print(f"model: {chosen.name}{' (the leaderboard best)' if model is None else ''}; {said}",
                          markup=False)
            bar.update(task, total=total, description=f"segment with {chosen.name}")

        options = SegmentOptions(tta=tta, step_size=step_size, soft_volumes=soft_volumes, qc=qc, qc_sheet=qc_sheet,
                                  strip=strip, resample=resample)
        result = run_segment(ws, inputs, output, model_name=model, device=device.value, jobs=cores(jobs),
                             options=options, on_start=on_start, on_scan_done=lambda _: bar.advance(task))
    to_check = [s.input for s in result.scans if not s.error and not s.quality_score >= qc_threshold]  # NaN too
    table = Table(title=f"tissue volumes ({result.model.name})")
    for column in ("scan", "CSF mL", "GM mL", "WM mL", "BPF", "QC", "seconds", "flags"):
        table.add_column(column, justify="left" if column in ("scan", "flags") else "right")
    for scan in result.scans:
        if scan.error:
            table.add_row(scan.input.name, "-", "-", "-", "-", "-", f"{scan.seconds:.1f}",
                          f"[red]failed: {escape(scan.error)}[/]")
        else:
            v = scan.reused if scan.reused is not None else scan.volumes
            seconds = "reused" if scan.reused is not None else f"{scan.seconds:.1f}"
            flags = v.get("qc_flags", "") if scan.reused is not None else "; ".join(scan.quality.flags)
            shown = f"{scan.quality_score:.2f}"
            shown = f"[bold yellow]{shown} check[/]" if scan.input in to_check else shown
            table.add_row(scan.input.name, f"{float(v['CSF_ml']):.1f}", f"{float(v['GM_ml']):.1f}",
                          f"{float(v['WM_ml']):.1f}", f"{float(v['BPF']):.3f}", shown, seconds, escape(str(flags)))
    console.print(table)
    done = [s for s in result.scans if not s.error and s.reused is None]
    if len(result.reused) == len(result.scans):
        console.print(f"all {len(result.scans)} scans are already segmented with this model, these inputs and "
                      f"options: nothing redone")
    elif result.reused:
        console.print(f"{len(result.reused)} scans already up to date (same input, model and options): reused")
    if done:
        console.print(f"{len(done)} label maps in {output}; {sum(s.seconds for s in done) / len(done):.1f} s per scan")
    if to_check:
        console.print(f"{len(to_check)} scans to check (QC score below {qc_threshold:g}): "
                      f"{', '.join(path.name for path in to_check)}")
    if result.sheet:
        console.print(f"QC contact sheet (lowest QC score first): {result.sheet}")
    console.print(f"wrote {result.csv}")
    if result.failed:  # the others are written: the command still fails, naming each failed scan's row
        names = ", ".join(scan.input.name for scan in result.failed)
        raise InputError(f"{len(result.failed)} of {len(result.scans)} scans failed: {names} (first: "
                         f"{result.failed[0].error}); each error is in its row of {result.csv}")


@app.command("export")
@refusals
def export(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(
        help="The trained model to export, e.g. nnunet_ensemble or unet2d__dice_ce.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="The bundle to write (FILE.zip).")] = None,
    listing: Annotated[bool, typer.Option("--list", help="Show what this workspace can export, with sizes.")] = False,
) -> None:
    """Write one trained model, with what `segment` needs of its workspace, into one .zip (a model bundle)."""
    from ..segment.bundle import export_model, exportable

    ws = workspace_of(ctx)
    if listing:
        table = Table(title=f"{ws.root}: models to export")
        for column in ("model", "kind", "bundle size"):
            table.add_column(column, justify="right" if column == "bundle size" else "left")
        for name, kind, size in exportable(ws):
            table.add_row(name, kind, f"{size / 2**20:.1f} MB")
        console.print(table)
        return
    if model is None or output is None:
        raise InputError("export needs a MODEL and --output FILE.zip (or --list to see what can be exported).")
    done = export_model(ws, model, output, say=console.print)
    console.print(f"wrote {done.path}: {done.model} ({done.kind}), {done.files} files, {done.bytes / 2**20:.1f} MB; "
                  f"use it with `ibsr-nnunet segment SCANS --output DIR --model {done.path}`", markup=False)
