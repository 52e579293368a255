"""`train`: one fold of nnU-Net, trained, resumed from its newest readable checkpoint, or skipped when finished."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..core.errors import InputError
from ..core.exitcodes import EXIT_STALLED
from ..core.jsonfile import read_json
from ..core.locks import Lock, LockedError, LockLost, lock_path
from ..core.provenance import dataset_fingerprint, ensure_current, record, short
from ..core.readwrite import reading, refuse_while_written
from ..core.runlog import RunLog, cpu_name, record_locked, stall_message
from ..core.signals import StopSignals
from ..core.workspace import Workspace
from .environment import resolve_device
from .paths import (
    FULL_EPOCHS,
    FULL_ITERATIONS,
    fold_finished,
    fold_folder,
    plan_stamp,
    plans_file,
    trainer_files,
    trainer_name,
)
from .plans import REPLAN, read_plans, read_splits
from .staging import staged_preprocessed
from .trainer import TrainingStalled, trainer_class

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_previous.pth")  # newest first
# nnU-Net's torch.compile on CUDA (nnUNet_compile; always off on CPU). Measured on an H200 (bench/GPU.md): it costs
# 38-52 s at the start of every run, requeued ones included, and makes epochs 1.2x (2d) to 1.5x (3d_fullres) faster,
# paying for itself within 3 minutes of training: on for any realistic slot.
COMPILE_DEFAULT = True
STAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: "
EPOCH_LINE = re.compile(STAMP + r"Epoch (\d+)\s*$", re.MULTILINE)
EPOCH_TIME_LINE = re.compile(STAMP + r"Epoch time: ([\d.]+) s\s*$", re.MULTILINE)


@dataclass
class TrainResult:
    fold_folder: Path
    status: str  # "finished", "already finished"
    resumed_from: Optional[str]  # checkpoint file name, or None for a fresh start
    start_epoch: int
    notes: list[str]


def _readable_checkpoint(path: Path, device) -> Optional[str]:
    """None when `path` loads, else why not."""
    import torch

    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        checkpoint["current_epoch"], checkpoint["network_weights"]
        return None
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        return " ".join(str(err).split())[:160] or type(err).__name__


def _read_plans(ws: Workspace, configuration: str, fold: int, fingerprint: str) -> dict:
    """nnU-Net's plans, refused in one sentence while a `plan` writes them (LockedError), or when they are missing,
    unreadable, left by a `plan` that did not finish, made from another dataset, or lack the configuration (planned
    and preprocessed) or the fold."""
    refuse_while_written(ws.preprocessed_dataset)
    path = plans_file(ws)
    if not path.is_file():
        raise InputError(f"{path}: no nnU-Net plans for this workspace; run `ibsr-nnunet plan` first.")
    stamp = plan_stamp(ws)
    if not stamp.is_file():
        raise InputError(f"{ws.preprocessed_dataset} is incomplete: it has no {stamp.name}, so `ibsr-nnunet plan` "
                         f"did not finish there; run `ibsr-nnunet plan` to plan and preprocess again.")
    recorded = read_json(stamp, REPLAN)
    recorded = recorded if isinstance(recorded, dict) else {}
    planned_from = recorded.get("raw_fingerprint")
    if planned_from != fingerprint:
        made = f"planned from dataset {short(planned_from)}" if planned_from else "not planned by ibsr-nnunet"
        raise InputError(f"{path} is stale: {made}, the workspace now holds {short(fingerprint)}; "
                         f"run `ibsr-nnunet plan` first.")
    plans = read_plans(ws)
    if configuration not in plans["configurations"]:
        raise InputError(f"--config {configuration} is not in {path.name} "
                         f"(has {', '.join(plans['configurations'])}); pick one of those or re-plan.")
    preprocessed = recorded.get("configurations") or []
    if configuration not in preprocessed:
        raise InputError(f"--config {configuration} was not preprocessed by the last `ibsr-nnunet plan` (it did "
                         f"{', '.join(map(str, preprocessed)) or 'none'}); run `ibsr-nnunet plan --configs "
                         f"{','.join(sorted({*map(str, preprocessed), configuration}))}`.")
    splits = read_splits(ws)
    if not 0 <= fold < len(splits):
        raise InputError(f"--fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1}.")
    return plans


@contextmanager
def _reading_preprocessed(ws: Workspace, configuration: str, fold: int, fingerprint: str, *, name: str,
                          command: str, say: Callable[[str], None]) -> Iterator[dict]:
    """Hold this fold's reader lock of the preprocessed dataset, so no `plan` rewrites it under the training (a
    running `plan` refuses us), and yield nnU-Net's plans, read under it."""
    with reading(ws.preprocessed_dataset, f"{name}__{configuration}__fold_{fold}",
                 f"{configuration} fold {fold} ({name}) reading {ws.preprocessed_dataset.name}", command, say=say):
        yield _read_plans(ws, configuration, fold, fingerprint)


def _newest_readable(folder: Path, device, say: Callable[[str], None]) -> tuple[Optional[str], list[str]]:
    """The newest checkpoint that loads (None: start fresh), and a note for each unreadable one passed over."""
    notes = []
    for candidate in CHECKPOINTS:
        path = folder / candidate
        if not path.is_file():
            continue
        problem = _readable_checkpoint(path, device)
        if problem is None:
            return candidate, notes
        notes.append(f"{candidate} is unreadable ({problem}); falling back to the previous checkpoint")
        say(notes[-1])
    return None, notes


def logged_epochs(log: Path) -> list[tuple[int, float]]:
    """(epoch, seconds) of each epoch one nnU-Net training log records as finished ("Epoch N" ... "Epoch time")."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    marks = sorted([(m.start(), "epoch", m[1]) for m in EPOCH_LINE.finditer(text)]
                   + [(m.start(), "time", m[1]) for m in EPOCH_TIME_LINE.finditer(text)])
    finished, epoch = [], None
    for _, kind, value in marks:
        if kind == "epoch":
            epoch = int(value)
        elif epoch is not None:
            finished.append((epoch, float(value)))
            epoch = None
    return finished


def _epochs_reached(folder: Path) -> Optional[int]:
    """The most epochs any run of this fold finished, from its training logs (None when none did)."""
    ends = [epoch + 1 for log in folder.glob("training_log_*.txt") for epoch, _ in logged_epochs(log)]
    return max(ends) if ends else None


@contextmanager
def _compile_setting(compile: Optional[bool], *, cuda: bool):
    """nnU-Net reads nnUNet_compile while it builds and trains: set for this run only, then restored. None: a
    value the user exported, else COMPILE_DEFAULT. Always off on CPU: nnU-Net's trainer ignores it there, but the
    predictor of its closing validation does not, and compiling costs 15-20 s per CPU fold for nothing."""
    previous = os.environ.get("nnUNet_compile")
    if compile is None:
        compile = COMPILE_DEFAULT if previous is None else previous.lower() in ("true", "1", "t")
    compile = compile and cuda
    os.environ["nnUNet_compile"] = "true" if compile else "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("nnUNet_compile", None)
        else:
            os.environ["nnUNet_compile"] = previous


def device_name(device) -> str:
    """The GPU's model for a CUDA device, else the CPU's."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def _announce(signum: int) -> None:
    import signal

    print(f"received {signal.Signals(signum).name}: finishing this iteration, then saving a checkpoint",
          file=sys.stderr, flush=True)


def train(ws: Workspace, configuration: str, fold: int, *, epochs: int = FULL_EPOCHS,
          iterations: int = FULL_ITERATIONS, device: str = "auto", save_every: int = 1, archive_stale: bool = False,
          stage_data: bool = False, local_scratch: Optional[Path] = None, compile: Optional[bool] = None,
          seed: Optional[int] = None, say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume, or skip) one fold, then write nnU-Net's validation with probabilities (--npz).

    One writer per fold (a lock); a fold made from another dataset is refused, or archived with `archive_stale`.
    SIGUSR1/SIGTERM at any point (start-up included) end it after a checkpoint, with EXIT_REQUEUE; EXIT_STALLED
    instead when this run and the one before were both stopped by SIGUSR1 before finishing an epoch. Each run
    that trains is recorded in the fold's runs.jsonl (core/runlog.py). `compile`: nnU-Net's torch.compile on CUDA
    (None: see _compile_setting). `seed`: seeded, reproducible training (seeding.py); None: nnU-Net's unseeded."""
    began = time.time()
    with StopSignals(on_signal=_announce) as stop:
        if epochs < 1 or iterations < 1 or save_every < 1:
            raise InputError("--epochs, --iterations-per-epoch and --save-every must be at least 1.")
        fingerprint = dataset_fingerprint(ws)
        _read_plans(ws, configuration, fold, fingerprint)  # refused before any lock file is made
        name = trainer_name(epochs, iterations)
        folder = fold_folder(ws, configuration, fold, trainer=name)
        command = f"ibsr-nnunet train --fold {fold} --config {configuration}"
        try:
            with Lock(lock_path(folder), f"{configuration} fold {fold} ({name})", command, say=say) as lock, \
                    _reading_preprocessed(ws, configuration, fold, fingerprint, name=name, command=command,
                                          say=say) as plans:
                _ensure_model_current(ws, folder, configuration=configuration, name=name, fingerprint=fingerprint,
                                      archive_stale=archive_stale, say=say)
                if fold_finished(folder):
                    return TrainResult(folder, "already finished", None, epochs, [])
                folder.mkdir(parents=True, exist_ok=True)
                record(folder, fingerprint, configuration=configuration, fold=fold, trainer=name)
                run = RunLog(folder, "train", started=began)
                try:
                    torch_device = resolve_device(device)
                    with _compile_setting(compile, cuda=torch_device.type == "cuda"), staged_preprocessed(
                            ws, plans["configurations"][configuration]["data_identifier"], enabled=stage_data,
                            local_scratch=local_scratch, say=say):
                        result = _train_fold(ws, plans, configuration, fold, folder=folder, name=name,
                                             torch_device=torch_device, save_every=save_every, seed=seed, stop=stop,
                                             run=run, lock=lock, say=say)
                except BaseException as err:
                    if run.end_after(err, signal_name=stop.name):
                        say(stall_message(run.epoch))
                        raise TrainingStalled(EXIT_STALLED) from None
                    raise
                run.end_after(None)
                return result
        except LockLost:
            raise  # the fold is another writer's now: write nothing more there
        except LockedError:
            record_locked(folder, "train")
            raise


def _ensure_model_current(ws: Workspace, folder: Path, *, configuration: str, name: str, fingerprint: str,
                          archive_stale: bool, say: Callable[[str], None]) -> None:
    """The fold to train and every other fold beside it must be of this dataset: training rewrites the model folder's
    plans.json, dataset.json and dataset_fingerprint.json, which each fold needs. A stale one is refused, or
    (`archive_stale`) moved to the archive with a copy of those files, so it stays usable from there."""
    for fold in sorted({folder, *folder.parent.glob("fold_*")}):
        ensure_current(ws, fold, what=f"{configuration} {fold.name.replace('_', ' ')} of {name}",
                       fingerprint=fingerprint, archive_stale=archive_stale, copies=trainer_files(folder.parent),
                       say=say)


def _train_fold(ws: Workspace, plans: dict, configuration: str, fold: int, *, folder: Path, name: str, torch_device,
                save_every: int, seed: Optional[int], stop: StopSignals, run: RunLog, lock: Lock,
                say: Callable[[str], None]) -> TrainResult:
    """Build our trainer, resume from the newest readable checkpoint, record the run's start, train, validate."""
    resume_from, notes = _newest_readable(folder, torch_device, say)
    dataset_json = json.loads((ws.preprocessed_dataset / "dataset.json").read_text())
    plans["continue_training"] = resume_from is not None
    trainer = trainer_class(name)(plans=plans, configuration=configuration, fold=fold,
                                  dataset_json=dataset_json, device=torch_device)
    trainer.save_every = save_every
    trainer.stop_signals = stop
    trainer.run_log = run
    trainer.lock = lock
    trainer.seed = seed
    if resume_from:
        trainer.load_checkpoint(str(folder / resume_from))
        say(f"resuming {name} {configuration} fold {fold} from {resume_from} at epoch {trainer.current_epoch}")
    start_epoch = trainer.current_epoch
    run.begin(epoch=start_epoch, device=torch_device.type, device_name=device_name(torch_device),
              reached=_epochs_reached(folder), compile=trainer._do_i_compile(), log=Path(trainer.log_file).name,
              seed=seed)
    if resume_from != "checkpoint_final.pth":
        trainer.run_training()
    # `--npz`: probabilities for nnU-Net's best-configuration search and ensembling
    trainer.perform_actual_validation(save_probabilities=True)
    return TrainResult(folder, "finished", resume_from, start_epoch, notes)
