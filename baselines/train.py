"""Resumable baseline training: budgets, plateau or cosine schedules, early stopping, atomic checkpoints, signals."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ibsr_nnunet.core.devices import torch_device
from ibsr_nnunet.core.durable import DurableRun, StopRun, TrainOutcome
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.runlog import cpu_name
from ibsr_nnunet.core.signals import StopSignals

from .data import Appearance, Augment, PatchSampler, chained, load_case
from .losses import build_loss
from .models import build_model
from .options import IDENTITY, LEGACY, TrainOptions
from .precision import autocast, grad_scaler
from .run_folder import (
    RunRecord,
    read_resume_checkpoint,
    write_best_weights,
    write_checkpoint,
    write_log,
    write_run_record,
)
from .threads import ThreadTuner

GRADIENT_CLIP = 12.0  # the largest gradient norm a step takes (nnU-Net's value)




def split_validation(case_ids: list[str], count: int, seed: int) -> tuple[list[str], list[str]]:
    """(training ids, internal validation ids): `count` ids (0 = 20 %, at least 1) drawn with `seed`."""
    if len(case_ids) < 2:
        raise InputError(f"training needs at least 2 labelled training subjects (one for internal validation), "
                         f"found {len(case_ids)}; convert a dataset with more subjects.")
    count = count or max(1, round(0.2 * len(case_ids)))
    if count >= len(case_ids):
        raise InputError(f"val_cases {count} leaves no training subject out of {len(case_ids)}; pass a smaller value.")
    chosen = set(np.random.default_rng(seed).choice(sorted(case_ids), count, replace=False).tolist())
    return [c for c in case_ids if c not in chosen], [c for c in case_ids if c in chosen]


def _optimizer(options: TrainOptions, params) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(params, lr=options.lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    if options.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=options.lr)
    return torch.optim.Adam(params, lr=options.lr)


def _cosine_lr(options: TrainOptions, iteration: int, seconds: float) -> float:
    """Warm-up, then cosine decay over whichever budget (iterations, epochs or minutes) is nearer its end."""
    if iteration < options.warmup_iterations:
        return options.lr * (iteration + 1) / options.warmup_iterations
    progress = []
    if options.iterations:
        progress.append(iteration / options.iterations)
    if options.epochs:
        progress.append(iteration / (options.epochs * options.iterations_per_epoch))
    if options.minutes:
        progress.append(seconds / (options.minutes * 60))
    return options.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(progress))))


def dice_per_class(prediction: torch.Tensor, target: torch.Tensor, classes=(1, 2, 3)) -> list[float]:
    """Hard Dice of each class over all voxels; 1.0 when a class is absent from both."""
    scores = []
    for c in classes:
        p, t = prediction == c, target == c
        denominator = int(p.sum() + t.sum())
        scores.append(1.0 if denominator == 0 else 2 * int((p & t).sum()) / denominator)
    return scores


def _check_same_run(folder: Path, saved: dict, options: TrainOptions) -> None:
    saved = {**LEGACY, **saved}
    changed = [k for k in IDENTITY if saved.get(k) != getattr(options, k)]
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise InputError(f"{folder} holds a run with {was}, which this call changes; pass the same options to resume "
                         f"it, or delete that folder to start again.")


def train(folder: Path, train_files: list[tuple[str, Path, Path]], options: TrainOptions, *,
          on_epoch: Callable[[dict], None] | None = None, on_iteration: Callable[[], None] | None = None,
          on_start: Callable[[int, int | None], None] | None = None,
          durable: DurableRun | None = None, tracked: dict | None = None) -> TrainOutcome:
    """Train (or resume) the run in `folder` on labelled (id, image, label) files; an internal validation split
    is taken from these files only. on_start(start_epoch, total_epochs), on_iteration() and on_epoch(log row)
    report progress. A durable run (core/durable.py): `durable` is the caller's, its lock taken (default: one of
    this folder, entered and locked here); a stop signal saves and raises StopRun, which it turns into Requeue (75)
    or Stalled (76); each call that trains is recorded in the folder's runs.jsonl (with `tracked`, what its start
    line says about the run's experiment tracking)."""
    if durable is None:
        folder = Path(folder)
        with DurableRun(folder, what=f"baseline run {folder.name}", command="baseline train",
                        history="baseline train") as durable:
            durable.acquire()
            return train(folder, train_files, options, on_epoch=on_epoch, on_iteration=on_iteration,
                         on_start=on_start, durable=durable, tracked=tracked)
    began = time.perf_counter()
    folder = Path(folder)
    state = read_resume_checkpoint(folder)
    if state is not None:
        _check_same_run(folder, state["options"], options)
        if state["finished"]:
            return TrainOutcome(folder, "already finished", state["epoch"], state["epoch"],
                                best_val_loss=state["best_val_loss"], best_val_dice=state["best_val_dice"],
                                train_seconds=state["train_seconds"], log=tuple(state["log"]))
    durable.open_history()
    return _train(folder, train_files, options, state, began=began, durable=durable, on_epoch=on_epoch,
                  on_iteration=on_iteration, on_start=on_start, tracked=tracked)


def _train(folder: Path, train_files: list[tuple[str, Path, Path]], options: TrainOptions, state: dict | None, *,
           began: float, durable: DurableRun, on_epoch, on_iteration, on_start, tracked: dict | None) -> TrainOutcome:
    """The training loop of `train`, recorded by `durable` from its start on."""
    training = _start_training(folder, train_files, options, began)
    if state is not None:
        training.restore(state)
    start_epoch = training.epoch
    folder.mkdir(parents=True, exist_ok=True)
    device = training.device
    durable.begin(epoch=start_epoch, device=device.type,
                  device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
                  **({"tracking": tracked} if tracked else {}))
    if on_start:
        on_start(start_epoch, options.epochs)
    finished = training.budget_spent()
    if finished:  # resumed with a budget already spent: record that the run is complete
        durable.verify_lock()
        training.save(finished=True)
    while not finished:
        losses = _train_epoch(training, durable.stop, on_iteration)
        if durable.stop_requested:  # the partial epoch is redone on resume; its updates stay in the weights
            durable.verify_lock()
            training.save(finished=False)
            raise StopRun(durable.signal_name)
        row = _end_epoch(training, losses)
        finished = training.budget_spent() or training.bad_epochs >= options.patience
        durable.verify_lock()  # lost: stop without writing into another writer's run
        training.save(finished)
        durable.epoch_finished(training.epoch)
        if on_epoch:
            on_epoch(row)
    return training.result("finished", start_epoch)


@dataclass
class _TrainingState:
    """One run's training state, shared by the epoch loop, the training step and the checkpoint writer."""

    folder: Path
    options: TrainOptions
    began: float  # perf_counter() at the start of this call; earlier calls' time is in seconds_before
    device: torch.device
    tuner: ThreadTuner
    train_ids: list[str]
    val_ids: list[str]
    sampler: PatchSampler
    val_data: list[tuple[torch.Tensor, torch.Tensor]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.Module
    epoch: int = 0
    best_val_loss: float = math.inf
    best_val_dice: float = 0.0
    bad_epochs: int = 0
    seconds_before: float = 0.0
    log: list[dict] = field(default_factory=list)

    def elapsed(self) -> float:
        """Training seconds summed across resumes."""
        return self.seconds_before + time.perf_counter() - self.began

    def out_of_time(self) -> bool:
        """Whether the minutes budget is used up."""
        return self.options.minutes is not None and self.elapsed() >= self.options.minutes * 60

    def steps_done(self) -> int:
        """Training iterations of the finished epochs (every epoch but the last has iterations_per_epoch)."""
        return self.epoch * self.options.iterations_per_epoch

    def epoch_iterations(self) -> int:
        """The next epoch's iterations: iterations_per_epoch, or what is left of the iteration budget."""
        options = self.options
        left = options.iterations - self.steps_done() if options.iterations is not None else math.inf
        return int(min(options.iterations_per_epoch, left))

    def budget_spent(self) -> bool:
        """Whether the iterations, epochs or minutes budget is used up."""
        options = self.options
        return (options.epochs is not None and self.epoch >= options.epochs
                or options.iterations is not None and self.steps_done() >= options.iterations or self.out_of_time())

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, scaler, random streams and counters."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.rng.bit_generator.state = state["rng"]["sampler"]
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch, self.best_val_loss = state["epoch"], state["best_val_loss"]
        self.best_val_dice, self.bad_epochs = state["best_val_dice"], state["bad_epochs"]
        self.seconds_before, self.log = state["train_seconds"], state["log"]

    def save(self, finished: bool) -> None:
        """checkpoint.pt (everything a resume needs), log.csv and run.json, each written atomically."""
        options, device = self.options, self.device
        checkpoint = {
            "options": asdict(options), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.plateau.state_dict(), "scaler": self.scaler.state_dict(), "epoch": self.epoch,
            "best_val_loss": self.best_val_loss, "best_val_dice": self.best_val_dice, "bad_epochs": self.bad_epochs,
            "train_seconds": self.elapsed(), "log": self.log, "finished": finished, "val_ids": self.val_ids,
            "rng": {"sampler": self.sampler.rng.bit_generator.state, "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }
        write_checkpoint(self.folder, checkpoint)
        write_log(self.folder, self.log)
        write_run_record(self.folder, RunRecord(
            model=options.model, loss=options.loss, options=asdict(options), train_cases=tuple(self.train_ids),
            val_cases=tuple(self.val_ids), epochs_done=self.epoch,
            best_val_loss=self.best_val_loss if self.log else None,
            best_val_dice=self.best_val_dice if self.log else None, train_seconds=round(self.elapsed(), 2),
            finished=finished))

    def step(self) -> float:
        """One training iteration; its loss."""
        image, label = self.sampler.batch(self.options.batch_size)
        image, label = image.to(self.device), label.to(self.device)
        if self.options.dims == 2:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.options.amp):
            loss = self.loss_fn(self.model(image), label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        apply_gradients(self.model, self.optimizer, self.scaler)
        return loss.item()

    def result(self, status: str, start_epoch: int) -> TrainOutcome:
        """What this call did, as train() returns it."""
        return TrainOutcome(self.folder, status, start_epoch, self.epoch, best_val_loss=self.best_val_loss,
                            best_val_dice=self.best_val_dice, train_seconds=self.elapsed(), log=tuple(self.log))


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """One optimiser step with the gradient norm clipped to GRADIENT_CLIP; a non-finite gradient (seen in narrow 3D
    networks with batches of 2 at Adam's 0.01 on CPU) is skipped instead of making every weight NaN, as GradScaler
    does on CUDA. False when the step was skipped."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
    finite = bool(torch.isfinite(norm))
    if finite:
        scaler.step(optimizer)
    else:
        optimizer.zero_grad(set_to_none=True)
    scaler.update()
    return finite


def _start_training(folder: Path, train_files: list[tuple[str, Path, Path]], options: TrainOptions,
                    began: float) -> _TrainingState:
    """Seed, split and load the cases, then build the samplers, network, optimiser, schedule and loss, untrained."""
    device = torch_device(options.device)
    fixed = options.threads or device.type != "cpu"
    tuner = ThreadTuner((options.threads or torch.get_num_threads(),) if fixed else None)
    torch.manual_seed(options.seed)
    train_ids, val_ids = split_validation([c[0] for c in train_files], options.val_cases, options.seed)
    cases = {cid: load_case(cid, image, label, options.view) for cid, image, label in train_files}
    sampler = PatchSampler([cases[c] for c in train_ids], options.patch, options.csf_fraction,
                           augment=chained(Augment() if options.augment else None,
                                           Appearance() if options.appearance else None), seed=options.seed,
                           flip=options.flip)
    # validation: the same un-augmented patches every epoch, so its losses are comparable across epochs
    val_sampler = PatchSampler([cases[c] for c in val_ids], options.patch, options.csf_fraction, seed=options.seed + 1)
    val_data = [val_sampler.batch(options.batch_size) for _ in range(options.val_batches)]

    model = build_model(options.model, options.width, options.depth, dropout=options.dropout).to(device)
    if options.dims == 2:
        model = model.to(memory_format=torch.channels_last)  # faster convolutions with oneDNN and cuDNN
    optimizer = _optimizer(options, model.parameters())
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=options.plateau_patience)
    scaler = grad_scaler(device, options.amp)
    return _TrainingState(folder, options, began, device, tuner, train_ids, val_ids, sampler, val_data, model,
                          optimizer, plateau, scaler, build_loss(options.loss).to(device))


def _train_epoch(training: _TrainingState, stop: StopSignals, on_iteration: Callable[[], None] | None) -> list[float]:
    """Up to iterations_per_epoch training steps (fewer for the last of an iteration budget); fewer when a stop
    signal comes or the minutes run out."""
    options = training.options
    training.model.train()
    losses = []
    for _ in range(training.epoch_iterations()):
        if options.schedule == "cosine":
            for group in training.optimizer.param_groups:
                steps_done = training.steps_done() + len(losses)
                group["lr"] = _cosine_lr(options, steps_done, training.elapsed())
        losses.append(training.tuner(training.step))
        if on_iteration:
            on_iteration()
        if stop.requested or training.out_of_time():
            break
    return losses


def _end_epoch(training: _TrainingState, losses: list[float]) -> dict:
    """Validate, step the plateau schedule, keep the best weights and counters; the epoch's log row."""
    options = training.options
    val_loss, val_dice = _validate(training.model, training.loss_fn, training.val_data, training.device, options.amp,
                                   options.dims)
    lr = training.optimizer.param_groups[0]["lr"]
    if options.schedule == "plateau":
        training.plateau.step(val_loss)
    training.epoch += 1
    if val_loss < training.best_val_loss:
        training.best_val_loss, training.best_val_dice, training.bad_epochs = val_loss, val_dice, 0
        write_best_weights(training.folder, asdict(options), training.epoch,
                           {k: v.cpu() for k, v in training.model.state_dict().items()})
    else:
        training.bad_epochs += 1
    row = {"epoch": training.epoch, "train_loss": round(float(np.mean(losses)), 5), "val_loss": round(val_loss, 5),
           "val_dice": round(val_dice, 5), "lr": f"{lr:.3g}", "seconds": round(training.elapsed(), 1)}
    training.log.append(row)
    return row


@torch.no_grad()
def _validate(model, loss_fn, batches, device, amp: bool, dims: int) -> tuple[float, float]:
    """(mean loss, mean foreground Dice) over the fixed validation batches."""
    model.eval()
    losses, predictions, targets = [], [], []
    for image, label in batches:
        image, label = image.to(device), label.to(device)
        if dims == 2:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(image)
        losses.append(float(loss_fn(logits.float(), label)))
        predictions.append(logits.argmax(1).cpu())
        targets.append(label.cpu())
    return float(np.mean(losses)), float(np.mean(dice_per_class(torch.cat(predictions), torch.cat(targets))))
