"""`train`: one fold of nnU-Net, trained, resumed from its newest readable checkpoint, or skipped when finished."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..core.durable import DurableRun, TrainOutcome
from ..core.errors import InputError
from ..core.provenance import dataset_fingerprint, ensure_current, short
from ..core.readwrite import reading, refuse_while_written
from ..core.runlog import cpu_name
from ..core.tracking import Tracking, tracked_run_id
from ..core.workspace import Workspace
from .environment import resolve_device, tracked
from .fold import CHECKPOINTS, epochs_reached, fold_finished, newest_checkpoint
from .paths import FULL_EPOCHS, FULL_ITERATIONS, fold_folder, plan_stamp, plans_file, trainer_files, trainer_name
from .plans import read_plan_stamp, read_plans, read_preprocessed_dataset_json, read_splits
from .presets import DEFAULT, Preset
from .staging import staged_preprocessed
from .trainer import trainer_class

# nnU-Net's torch.compile on CUDA (nnUNet_compile; always off on CPU). Measured on an H200 (bench/GPU.md): it costs
# 38-52 s at the start of every run, requeued ones included, and makes epochs 1.2x (2d) to 1.5x (3d_fullres) faster,
# paying for itself within 3 minutes of training: on for any realistic slot.
COMPILE_DEFAULT = True
def _read_plans(ws: Workspace, preset: Preset, configuration: str, fold: int, fingerprint: str) -> dict:
    """nnU-Net's plans of the preset, refused in one sentence while a `plan` writes them (LockedError), or when they
    are missing, unreadable, left by a `plan` that did not finish, made from another dataset, or lack the
    configuration (planned and preprocessed) or the fold."""
    refuse_while_written(ws.preprocessed_dataset)
    path = plans_file(ws, preset)
    presets = preset.option("--presets")
    if not path.is_file():
        raise InputError(f"{path}: no nnU-Net plans of preset {preset.name} in this workspace; run `ibsr-nnunet "
                         f"plan{presets}` first.")
    recorded = read_plan_stamp(ws, preset)
    if recorded is None:
        raise InputError(f"{ws.preprocessed_dataset} is incomplete: it has no {plan_stamp(ws, preset).name}, so "
                         f"`ibsr-nnunet plan{presets}` did not finish there; run it to plan and preprocess again.")
    planned_from = recorded.raw_fingerprint
    if planned_from != fingerprint:
        made = f"planned from dataset {short(planned_from)}" if planned_from else "not planned by ibsr-nnunet"
        raise InputError(f"{path} is stale: {made}, the workspace now holds {short(fingerprint)}; "
                         f"run `ibsr-nnunet plan{presets}` first.")
    plans = read_plans(ws, preset)
    if configuration not in plans["configurations"]:
        raise InputError(f"--config {configuration} is not in {path.name} "
                         f"(has {', '.join(plans['configurations'])}); pick one of those or re-plan.")
    preprocessed = recorded.configurations
    if configuration not in preprocessed:
        raise InputError(f"--config {configuration} was not preprocessed by the last `ibsr-nnunet plan{presets}` (it "
                         f"did {', '.join(map(str, preprocessed)) or 'none'}); run `ibsr-nnunet plan --configs "
                         f"{','.join(sorted({*map(str, preprocessed), configuration}))}{presets}`.")
    splits = read_splits(ws)
    if not 0 <= fold < len(splits):
        raise InputError(f"--fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1}.")
    return plans


@contextmanager
def _reading_preprocessed(ws: Workspace, preset: Preset, configuration: str, fold: int, fingerprint: str, *,
                          name: str, command: str, say: Callable[[str], None]) -> Iterator[dict]:
    """Hold this fold's reader lock of the preprocessed dataset, so no `plan` rewrites it under the training (a
    running `plan` refuses us), and yield nnU-Net's plans, read under it."""
    reader = f"{name}__{configuration}__fold_{fold}" if preset.is_default else \
        f"{name}__{preset.plans}__{configuration}__fold_{fold}"
    with reading(ws.preprocessed_dataset, reader, f"{configuration} fold {fold} ({name}, {preset.plans}) reading "
                 f"{ws.preprocessed_dataset.name}", command, say=say):
        yield _read_plans(ws, preset, configuration, fold, fingerprint)


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
          seed: Optional[int] = None, tracking: Tracking = Tracking(), preset: Preset = DEFAULT,
          say: Callable[[str], None] = print) -> TrainOutcome:
    """Train (or resume, or skip) one fold, then write nnU-Net's validation with probabilities (--npz).

    A durable run (core/durable.py): one writer per fold, SIGUSR1/SIGTERM at any point (start-up included) end it
    after a checkpoint with Requeue (75), or Stalled (76) when this run and the one before were both stopped by
    SIGUSR1 before finishing an epoch; each run that trains is recorded in the fold's runs.jsonl. A fold made from
    another dataset is refused, or archived with `archive_stale`. `compile`: nnU-Net's torch.compile on CUDA (None:
    see _compile_setting). `seed`: seeded, reproducible training (seeding.py); None: nnU-Net's unseeded. `tracking`:
    nnU-Net's own W&B logging, into one W&B run per fold folder and dataset (core/tracking.py). `preset`: nnU-Net's
    plans to train (nnunet/presets.py)."""
    tracking.require()
    name = trainer_name(epochs, iterations)
    folder = fold_folder(ws, configuration, fold, trainer=name, plans=preset.plans)
    command = f"ibsr-nnunet train --fold {fold} --config {configuration}{preset.option()}"
    what = f"{configuration} fold {fold} ({name}{'' if preset.is_default else ', ' + preset.plans})"
    with DurableRun(folder, what=what, command=command, history="train", on_signal=_announce, say=say) as run:
        if epochs < 1 or iterations < 1 or save_every < 1:
            raise InputError("--epochs, --iterations-per-epoch and --save-every must be at least 1.")
        fingerprint = dataset_fingerprint(ws)
        _read_plans(ws, preset, configuration, fold, fingerprint)  # refused before any lock file is made
        run.acquire()
        plans = run.hold(_reading_preprocessed(ws, preset, configuration, fold, fingerprint, name=name,
                                               command=command, say=say))
        _ensure_model_current(ws, folder, configuration=configuration, name=name, fingerprint=fingerprint,
                              archive_stale=archive_stale, say=say)
        if fold_finished(folder):
            return TrainOutcome(folder, "already finished", epochs, epochs)
        run.record_provenance(fingerprint, configuration=configuration, fold=fold, trainer=name, plans=preset.plans)
        run.open_history()
        torch_device = resolve_device(device)
        tracked_id = tracked_run_id(folder, fingerprint)
        # nnU-Net opens its W&B run when the trainer is built
        with _compile_setting(compile, cuda=torch_device.type == "cuda"), staged_preprocessed(
                ws, plans["configurations"][configuration]["data_identifier"], enabled=stage_data,
                local_scratch=local_scratch, say=say), tracked(tracking, tracked_id):
            return _train_fold(ws, plans, configuration, fold, name=name, torch_device=torch_device,
                               save_every=save_every, seed=seed, run=run, tracking=tracking.record(tracked_id),
                               preset=preset, say=say)


def _ensure_model_current(ws: Workspace, folder: Path, *, configuration: str, name: str, fingerprint: str,
                          archive_stale: bool, say: Callable[[str], None]) -> None:
    """The fold to train and every other fold beside it must be of this dataset: training rewrites the model folder's
    plans.json, dataset.json and dataset_fingerprint.json, which each fold needs. A stale one is refused, or
    (`archive_stale`) moved to the archive with a copy of those files, so it stays usable from there."""
    for fold in sorted({folder, *folder.parent.glob("fold_*")}):
        ensure_current(ws, fold, what=f"{configuration} {fold.name.replace('_', ' ')} of {name}",
                       fingerprint=fingerprint, archive_stale=archive_stale, copies=trainer_files(folder.parent),
                       say=say)


def _train_fold(ws: Workspace, plans: dict, configuration: str, fold: int, *, name: str, torch_device,
                save_every: int, seed: Optional[int], run: DurableRun, tracking: Optional[dict], preset: Preset,
                say: Callable[[str], None]) -> TrainOutcome:
    """Build our trainer, resume from the newest readable checkpoint (loaded once), record the run's start (with
    `tracking`, what the start line says of it), train, validate."""
    folder = run.folder
    checkpoint = newest_checkpoint(folder, torch_device, say)
    dataset_json = read_preprocessed_dataset_json(ws)
    plans["continue_training"] = checkpoint is not None
    trainer = trainer_class(name)(plans=plans, configuration=configuration, fold=fold,
                                  dataset_json=dataset_json, device=torch_device)
    trainer.save_every = save_every
    trainer.durable = run
    trainer.seed = seed
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint.state)
        say(f"resuming {name} {configuration} fold {fold}{preset.option()} from {checkpoint.name} at epoch "
            f"{trainer.current_epoch}")
    start_epoch = trainer.current_epoch
    run.begin(epoch=start_epoch, device=torch_device.type, device_name=device_name(torch_device),
              reached=epochs_reached(folder), compile=trainer._do_i_compile(), log=Path(trainer.log_file).name,
              seed=seed, **({"tracking": tracking} if tracking else {}), **({} if preset.is_default else {
                  "preset": preset.name, "plans": preset.plans}))
    resumed_from = checkpoint.name if checkpoint is not None else None
    del checkpoint  # its tensors: the trainer holds its own copies now
    if resumed_from != CHECKPOINTS[0]:
        trainer.run_training()
    # `--npz`: probabilities for nnU-Net's best-configuration search and ensembling
    trainer.perform_actual_validation(save_probabilities=True)
    return TrainOutcome(folder, "finished", start_epoch, trainer.current_epoch, resumed_from=resumed_from)
