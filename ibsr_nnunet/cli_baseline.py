"""`ibsr-nnunet baseline train|predict`: the hand-built PyTorch baselines (commands arrive with their issue)."""

from __future__ import annotations

import typer

from .cli import app

baseline_app = typer.Typer(help="Hand-built PyTorch baselines: train, then predict the held-out and test cases.",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
