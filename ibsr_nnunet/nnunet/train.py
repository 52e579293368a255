"""`train`: one fold of nnU-Net, trained, resumed from its newest readable checkpoint, or skipped when finished."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..core.errors import InputError
from ..core.jsonfile import read_json
from ..core.locks import Lock, lock_path
from ..core.provenance import dataset_fingerprint, ensure_current, record, short
from ..core.signals import StopSignals
from ..core.workspace import Workspace
from .environment import resolve_device
from .paths import FULL_EPOCHS, FULL_ITERATIONS, fold_finished, fold_folder, plan_stamp, plans_file, trainer_name
from .staging import staged_preprocessed
from .trainer import trainer_class

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_previous.pth")  # newest first


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
    """nnU-Net's plans, refused in one sentence when they are missing, unreadable, made from another dataset, or
    lack the configuration or the fold."""
    path = plans_file(ws)
    if not path.is_file():
        raise InputError(f"{path}: no nnU-Net plans for this workspace; run `ibsr-nnunet plan` first.")
    replan = "run `ibsr-nnunet plan --force` to plan and preprocess again"
    planned_from = read_json(plan_stamp(ws), replan).get("raw_fingerprint") if plan_stamp(ws).is_file() else None
    if planned_from != fingerprint:
        made = f"planned from dataset {short(planned_from)}" if planned_from else "not planned by ibsr-nnunet"
        raise InputError(f"{path} is stale: {made}, the workspace now holds {short(fingerprint)}; "
                         f"run `ibsr-nnunet plan` first.")
    plans = read_json(path, replan)
    if configuration not in plans["configurations"]:
        raise InputError(f"--config {configuration} is not in {path.name} "
                         f"(has {', '.join(plans['configurations'])}); pick one of those or re-plan.")
    splits = read_json(ws.preprocessed_dataset / "splits_final.json", replan)
    if not 0 <= fold < len(splits):
        raise InputError(f"--fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1}.")
    return plans


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


def _announce(signum: int) -> None:
    import signal

    print(f"received {signal.Signals(signum).name}: finishing this iteration, then saving a checkpoint",
          file=sys.stderr, flush=True)


def train(ws: Workspace, configuration: str, fold: int, *, epochs: int = FULL_EPOCHS,
          iterations: int = FULL_ITERATIONS, device: str = "auto", save_every: int = 1, archive_stale: bool = False,
          stage_data: bool = False, local_scratch: Optional[Path] = None,
          say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume, or skip) one fold, then write nnU-Net's validation with probabilities (--npz).

    One writer per fold (a lock); a fold made from another dataset is refused, or archived with `archive_stale`.
    SIGUSR1/SIGTERM at any point (start-up included) end it after a checkpoint, with EXIT_REQUEUE."""
    with StopSignals(on_signal=_announce) as stop:
        if epochs < 1 or iterations < 1 or save_every < 1:
            raise InputError("--epochs, --iterations-per-epoch and --save-every must be at least 1.")
        fingerprint = dataset_fingerprint(ws)
        plans = _read_plans(ws, configuration, fold, fingerprint)
        name = trainer_name(epochs, iterations)
        folder = fold_folder(ws, configuration, fold, trainer=name)
        with Lock(lock_path(folder), f"{configuration} fold {fold} ({name})",
                  f"ibsr-nnunet train --fold {fold} --config {configuration}", say=say):
            ensure_current(ws, folder, what=f"{configuration} fold {fold} of {name}", fingerprint=fingerprint,
                           archive_stale=archive_stale, say=say)
            if fold_finished(folder):
                return TrainResult(folder, "already finished", None, epochs, [])
            folder.mkdir(parents=True, exist_ok=True)
            record(folder, fingerprint, configuration=configuration, fold=fold, trainer=name)
            with staged_preprocessed(ws, plans["configurations"][configuration]["data_identifier"],
                                     enabled=stage_data, local_scratch=local_scratch, say=say):
                return _train_fold(ws, plans, configuration, fold, folder=folder, name=name, device=device,
                                   save_every=save_every, stop=stop, say=say)


def _train_fold(ws: Workspace, plans: dict, configuration: str, fold: int, *, folder: Path, name: str, device: str,
                save_every: int, stop: StopSignals, say: Callable[[str], None]) -> TrainResult:
    """Build our trainer, resume from the newest readable checkpoint, train, validate."""
    torch_device = resolve_device(device)
    resume_from, notes = _newest_readable(folder, torch_device, say)
    dataset_json = json.loads((ws.preprocessed_dataset / "dataset.json").read_text())
    plans["continue_training"] = resume_from is not None
    trainer = trainer_class(name)(plans=plans, configuration=configuration, fold=fold,
                                  dataset_json=dataset_json, device=torch_device)
    trainer.save_every = save_every
    trainer.stop_signals = stop
    if resume_from:
        trainer.load_checkpoint(str(folder / resume_from))
        say(f"resuming {name} {configuration} fold {fold} from {resume_from} at epoch {trainer.current_epoch}")
    start_epoch = trainer.current_epoch
    if resume_from != "checkpoint_final.pth":
        trainer.run_training()
    # `--npz`: probabilities for nnU-Net's best-configuration search and ensembling
    trainer.perform_actual_validation(save_probabilities=True)
    return TrainResult(folder, "finished", resume_from, start_epoch, notes)
