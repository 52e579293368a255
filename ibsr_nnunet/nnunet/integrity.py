"""nnU-Net's own dataset integrity check, run by `convert` before a dataset appears."""

from __future__ import annotations

import contextlib
import io
import threading
import types
from pathlib import Path

from ..core.errors import InputError
from .environment import fork_pools


def _import_integrity_check() -> types.ModuleType:
    import nnunetv2.experiment_planning.verify_dataset_integrity as integrity

    return integrity


def preload_in_background() -> threading.Thread:
    """Import nnU-Net (~3 s of torch) on a thread, overlapping work that runs in already-started processes."""
    thread = threading.Thread(target=_import_integrity_check, name="import-nnunetv2", daemon=True)
    thread.start()
    return thread


def verify_dataset(folder: Path, processes: int) -> None:
    """nnU-Net's integrity check on a raw dataset folder; its failure becomes one InputError."""
    integrity = _import_integrity_check()
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), fork_pools(integrity):
            integrity.verify_dataset_integrity(str(folder), max(1, processes))
    except (AssertionError, RuntimeError, FileNotFoundError, ValueError) as err:
        details = " ".join(f"{err} {chatter.getvalue()}".split())[:600]
        raise InputError(
            f"{folder.name}: nnU-Net's dataset integrity check failed ({details}); nothing was written, "
            f"fix the source files it names and convert again."
        ) from None
