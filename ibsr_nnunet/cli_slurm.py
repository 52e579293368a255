"""`ibsr-nnunet submit|status`: the SLURM campaign (commands arrive with their issue)."""

from __future__ import annotations

from .cli import app  # noqa: F401
