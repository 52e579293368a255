"""The `ibsr-nnunet` command line: one thin Typer app per stage, composed here into the root app.

Each command parses its options, calls one function of its stage, and renders the result.
"""

from __future__ import annotations

import typer

from ..core.environment import prepare_process
from . import baseline, campaign, dataset, demo, scoring, segment, training
from .common import WorkspaceOption

app = typer.Typer(
    help="IBSR18 brain-tissue segmentation (CSF, GM, WM) with nnU-Net v2 on SLURM, ranked against baselines.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


@app.callback()
def main_options(ctx: typer.Context, workspace: WorkspaceOption = None) -> None:
    ctx.obj = {"workspace": workspace}


# the pipeline's order in --help: data, nnU-Net, scoring, campaign, segment, demo; baselines as a group
for stage in (dataset.app, training.app, scoring.app, campaign.app, segment.app, demo.app):
    app.registered_commands.extend(stage.registered_commands)
app.add_typer(baseline.app, name="baseline")


def main() -> None:
    """Process entry (console script and `python -m ibsr_nnunet`): environment first, then the command."""
    prepare_process()
    app()
