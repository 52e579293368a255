"""`phantom` and `convert`: synthetic IBSR-like subjects, and IBSR18 trees made into nnU-Net raw data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import (
    JobsOption,
    Layout,
    PhantomSize,
    SourceLayout,
    console,
    progress_bar,
    refusals,
    stage_app,
    workspace_of,
)

app = stage_app("Data: synthetic phantoms and conversion to nnU-Net's raw layout.")


@app.command()
@refusals
def phantom(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic subjects into.")],
    subjects: Annotated[int, typer.Option("--subjects", min=1, help="How many subjects.")] = 6,
    layout: Annotated[Layout, typer.Option("--layout", help="Source layout to write.")] = Layout.misa,
    size: Annotated[PhantomSize, typer.Option(
        "--size", help="small (64×32×64), full (256×128×256), or demo (64×32×64, wider CSF).")] = PhantomSize.small,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same subjects.")] = 0,
) -> None:
    """Write synthetic IBSR-like subjects in one of the source layouts."""
    from ..data.phantom import write_phantoms

    with progress_bar() as bar:
        task = bar.add_task(f"phantom {layout.value}/{size.value}", total=subjects)
        images = write_phantoms(out, subjects, layout=layout.value, size=size.value, seed=seed,
                                on_subject_done=lambda _: bar.advance(task))
    console.print(f"wrote {len(images)} {size.value} phantom subjects in the {layout.value} layout under {out}")


@app.command()
@refusals
def convert(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="The IBSR18 folder as you have it.")],
    dataset_id: Annotated[int, typer.Option("--dataset-id", help="nnU-Net dataset ID.")] = 501,
    layout: Annotated[SourceLayout, typer.Option("--layout", help="Source layout (auto: detect).")] = SourceLayout.auto,
    label_map: Annotated[Optional[str], typer.Option(
        "--label-map", help="Explicit coding, e.g. 128=CSF,192=GM,254=WM (default: recognise known codings).")] = None,
    fill: Annotated[bool, typer.Option(
        "--fill", help="NITRC layouts: use *_segTRI_fill_ana instead of *_segTRI_ana.")] = False,
    n4: Annotated[bool, typer.Option("--n4", help="N4 bias-field correction (SimpleITK).")] = False,
    denoise: Annotated[bool, typer.Option("--denoise", help="Curvature anisotropic diffusion (SimpleITK).")] = False,
    heldout_fraction: Annotated[float, typer.Option(
        "--heldout-fraction", help="Share of labelled subjects held out when the source has no Validation_Set.")] = 0.2,
    jobs: JobsOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a different dataset already under this ID.")] = False,
) -> None:
    """Convert an IBSR18 tree into nnU-Net v2's raw layout, with a correct 4-class dataset.json."""
    from ..data.convert import ConvertOptions, convert as run_convert
    from ..data.labels import parse_label_map
    from ..data.preprocess import Preprocessing

    options = ConvertOptions(
        dataset_id=dataset_id, layout=layout.value, label_map=parse_label_map(label_map) if label_map else None,
        fill=fill, preprocessing=Preprocessing(n4=n4, denoise=denoise), heldout_fraction=heldout_fraction,
        jobs=jobs, force=force,
    )
    ws = workspace_of(ctx, dataset_id)
    with progress_bar() as bar:
        task = bar.add_task("convert", total=None)
        result = run_convert(source, ws, options, on_start=lambda n: bar.update(task, total=n),
                             on_case_done=lambda _: bar.advance(task), on_replace=_say_what_turns_stale)
    if result.up_to_date:
        console.print(f"{result.dataset} is already up to date with {source}: nothing to do.")
        return
    manifest = result.manifest
    split = manifest.split
    table = Table(title=f"{manifest.dataset} ({manifest.layout} layout)")
    for column in ("role", "subjects", "folder"):
        table.add_column(column)
    table.add_row("train", ", ".join(split.train), "imagesTr + labelsTr")
    table.add_row("held out", ", ".join(split.heldout), "imagesTs + labelsTs")
    table.add_row("test", ", ".join(split.test) or "-", "imagesTs")
    console.print(table)
    console.print(f"held-out policy: {split.policy}; {split.folds} cross-validation folds")
    console.print(f"wrote {result.dataset}")


def _say_what_turns_stale(stale: dict[str, list[Path]]) -> None:
    if not stale:
        console.print("replacing the dataset: no trained fold, baseline run or prediction set was made from the "
                      "old one")
        return
    counts = ", ".join(f"{len(found)} {kind}" for kind, found in stale.items())
    console.print(f"replacing the dataset makes stale: {counts}. They stay where they are; `train` and `baseline "
                  f"train` refuse them (pass --archive-stale to move them to the workspace's stale/ folder and start "
                  f"afresh), `ensemble` and `leaderboard` leave them out, and each step moves what it would "
                  f"overwrite of them to stale/ first.", markup=False)
