"""The one door to nnU-Net v2: every import of nnunetv2 in this project happens in this module."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import threading
import types
from pathlib import Path

from .errors import InputError


def configure_worker_counts(cores: int) -> None:
    """nnU-Net's process counts from the cores we have (its defaults assume 8-12); a user's own values win."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, cores)))
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, cores)))


def _import_integrity_check() -> types.ModuleType:
    import nnunetv2.experiment_planning.verify_dataset_integrity as integrity

    return integrity


def preload_in_background() -> threading.Thread:
    """Import nnU-Net (~3 s of torch) on a thread, overlapping work that runs in already-started processes."""
    thread = threading.Thread(target=_import_integrity_check, name="import-nnunetv2", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _fork_pools(module: types.ModuleType):
    """nnU-Net opens a *spawn* pool whose workers each re-import torch (~3 s apiece); fork workers inherit it."""
    fork_only = types.SimpleNamespace(get_context=lambda method=None: multiprocessing.get_context("fork"))
    original = module.multiprocessing
    module.multiprocessing = fork_only
    try:
        yield
    finally:
        module.multiprocessing = original


def verify_dataset(folder: Path, processes: int) -> None:
    """nnU-Net's own integrity check on a raw dataset folder; its failure becomes one InputError."""
    integrity = _import_integrity_check()
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), _fork_pools(integrity):
            integrity.verify_dataset_integrity(str(folder), max(1, processes))
    except (AssertionError, RuntimeError, FileNotFoundError, ValueError) as err:
        details = " ".join(f"{err} {chatter.getvalue()}".split())[:600]
        raise InputError(
            f"{folder.name}: nnU-Net's dataset integrity check failed ({details}); nothing was written, "
            f"fix the source files it names and convert again."
        ) from None
