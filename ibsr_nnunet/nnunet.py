"""The one door to nnU-Net v2: every import of nnunetv2 in this project happens in this module."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from .errors import InputError


def configure_worker_counts(cores: int) -> None:
    """nnU-Net's process counts from the cores we have (its defaults assume 8-12); a user's own values win."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, cores)))
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, cores)))


def verify_dataset(folder: Path, processes: int) -> None:
    """nnU-Net's own integrity check on a raw dataset folder; its failure becomes one InputError."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            verify_dataset_integrity(str(folder), max(1, processes))
    except (AssertionError, RuntimeError, FileNotFoundError, ValueError) as err:
        details = " ".join(f"{err} {chatter.getvalue()}".split())[:600]
        raise InputError(
            f"{folder.name}: nnU-Net's dataset integrity check failed ({details}); nothing was written, "
            f"fix the source files it names and convert again."
        ) from None
