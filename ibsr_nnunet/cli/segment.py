"""`segment`: new scans through any trained model, into tissue maps and a volumes table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import Device, DeviceOption, JobsOption, console, cores, errors, progress_bar, refusals, stage_app, workspace_of

app = stage_app("Segment new scans with a trained model.")


@app.command()
@refusals
def segment(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="T1 scans (.nii, .nii.gz, Analyze .hdr/.img) or folders of them.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the label maps and volumes.csv.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", help="A leaderboard model, e.g. nnunet_ensemble or unet2d__dice_ce (default: the best).")] = None,
    device: DeviceOption = Device.auto,
    jobs: JobsOption = 0,
) -> None:
    """Segment new scans into CSF, GM and WM, and report tissue volumes (mL), fractions and BPF."""
    from ..nnunet.environment import configure
    from ..segment import segment as run_segment

    ws = workspace_of(ctx)
    configure(ws, cores(jobs))
    with progress_bar() as bar:
        task = bar.add_task("segment", total=None)

        def on_start(chosen, total):
            scores = chosen.scores
            said = (f"held-out mean Dice {scores['mean_dice']:.3f} (CSF {scores['CSF_dice_mean']:.3f}, "
                    f"GM {scores['GM_dice_mean']:.3f}, WM {scores['WM_dice_mean']:.3f}) on {scores['cases']}"
                    if scores else "not on the leaderboard: no held-out scores")
            console.print(f"model: {chosen.name}{' (the leaderboard best)' if model is None else ''}; {said}")
            bar.update(task, total=total, description=f"segment with {chosen.name}")

        result = run_segment(ws, inputs, output, model_name=model, device=device.value, jobs=cores(jobs),
                             on_start=on_start, on_scan_done=lambda _: bar.advance(task))
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
