"""Our nnUNetTrainer subclasses: nnU-Net's trainer made durable (atomic checkpoints, a clean stop on a signal).

`IbsrTrainer` is the full schedule (1000 epochs × 250 iterations); `IbsrTrainer_<E>ep_<I>it` a short one, so a smoke
run can never be mistaken for a full one. nnU-Net builds trainers with exactly its five constructor arguments (and
copies them from `locals()`), so settings of ours are attributes set after construction by `train`:
`save_every` (1 here, also under nnU-Net's own `nnUNetv2_train -tr Ibsr…`; nnU-Net's default is 50),
`durable` (the run's core/durable.DurableRun: its stop signals, the fold's lock verified before every checkpoint,
its runs.jsonl entry; None under `nnUNetv2_train`, which gets no save-and-stop on signals) and `seed` (None:
nnU-Net's unseeded training; else seeding.py's). Under `nnUNetv2_train` the trainer records the fold's dataset
itself, through a DurableRun of its own that takes no lock; under `train`, `train` has recorded it.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Optional

from ..core.atomic import fsync_dir
from ..core.durable import DurableRun, StopRun
from ..core.errors import InputError, LockLost
from ..core.exitcodes import EXIT_REQUEUE
from ..core.manifest import read_manifest_if_any
from .environment import die_with
from .paths import trainer_schedule
from .seeding import EPOCH_START, NETWORK_INIT, seed_everything, seeded_dataloaders


def _worker_bound_to_trainer(producer, trainer_pid: int, *args, **kwargs):
    """nnU-Net's data-augmentation worker, started by the trainer, bound to it first."""
    die_with(trainer_pid)
    return producer(*args, **kwargs)


def bind_augmentation_workers() -> None:
    """Every data-augmentation worker this process starts from now on ends with it.

    The workers keep ignoring SIGUSR1/SIGTERM (they inherit StopSignals' handler, which acts in the trainer only):
    SLURM signals every process of a job, and workers dying on SIGTERM would fail the trainer before it saves.
    """
    import batchgenerators.dataloading.multi_threaded_augmenter as ordered
    import batchgenerators.dataloading.nondet_multi_threaded_augmenter as unordered

    for augmenter in (unordered, ordered):  # nnU-Net's own; seeding.py's
        producer = augmenter.producer
        if getattr(producer, "trainer_pid", None) == os.getpid():
            continue
        original = getattr(producer, "original", producer)
        bound = functools.partial(_worker_bound_to_trainer, original, os.getpid())
        bound.original, bound.trainer_pid = original, os.getpid()
        augmenter.producer = bound


def record_provenance(folder: Path, dataset_name: str, **details) -> None:
    """Under nnU-Net's own `nnUNetv2_train -tr Ibsr…`: the fold records the dataset it is trained from, as
    `ibsr-nnunet train` does; a fold recorded from another dataset is refused in one sentence, exit 1. A fold without
    a record is taken as this dataset's: only `ibsr-nnunet train` refuses those."""
    manifest = read_manifest_if_any(Path(os.environ.get("nnUNet_raw", "")) / dataset_name)
    if manifest is None:
        return  # a dataset `convert` did not make: nothing to record it against
    run = DurableRun(folder, what=str(folder), command="nnUNetv2_train", history="nnUNetv2_train")
    try:
        run.record_provenance(manifest.fingerprint, **details)
    except InputError as err:  # nnU-Net's CLI would print a traceback: leave with the sentence and status 1 instead
        raise SystemExit(str(err)) from None


@functools.lru_cache(maxsize=None)
def trainer_class(name: str):
    """The nnUNetTrainer subclass called `name` (IbsrTrainer or IbsrTrainer_<E>ep_<I>it); AttributeError otherwise."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    try:
        epochs, iterations = trainer_schedule(name)
    except KeyError:
        raise AttributeError(name) from None

    class Trainer(nnUNetTrainer):
        """nnU-Net's trainer, made durable: atomic checkpoints every epoch and a clean stop on SIGUSR1/SIGTERM."""

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, round(iterations / 5))
            self.save_every = 1
            self.durable: Optional[DurableRun] = None
            self.seed: Optional[int] = None

        def on_train_start(self):
            if self.durable is None:  # nnU-Net's own nnUNetv2_train; `train` recorded the dataset before
                record_provenance(Path(self.output_folder), self.plans_manager.dataset_name,
                                  configuration=self.configuration_name, fold=self.fold, trainer=name)
            bind_augmentation_workers()  # before nnU-Net starts its workers in get_dataloaders
            if self.seed is not None:
                seed_everything(self.seed, NETWORK_INIT)  # nnU-Net initialises the network's weights next
            super().on_train_start()

        def get_dataloaders(self):
            if self.seed is None:
                return super().get_dataloaders()
            return seeded_dataloaders(self, super().get_dataloaders, self.seed)

        def on_epoch_start(self):
            if self.seed is not None:  # a run resumed at this epoch draws what an unbroken one draws
                seed_everything(self.seed, EPOCH_START, self.current_epoch)
            super().on_epoch_start()

        def save_checkpoint(self, filename: str) -> None:
            """Write to a temporary file, fsync, keep the previous good checkpoint, then rename into place."""
            if self.local_rank != 0:
                return
            if self.durable is not None:
                try:
                    self.durable.verify_lock()  # taken over or deleted: stop before writing into another's fold
                except LockLost:
                    self._finish_loaders()
                    raise
            started = time.perf_counter()
            target = Path(filename)
            partial = target.with_name(f".{target.name}.partial")
            super().save_checkpoint(str(partial))
            with open(partial, "rb+") as handle:
                os.fsync(handle.fileno())
            if target.name == "checkpoint_latest.pth" and target.exists():
                os.replace(target, target.with_name("checkpoint_previous.pth"))
            os.replace(partial, target)
            fsync_dir(target.parent)
            # the price of durability, in the log where bench/resume.py and users can see it
            self.print_to_log_file(f"{target.name} written in {time.perf_counter() - started:.3f} s")

        def _stop_requested(self) -> bool:
            return self.durable is not None and self.durable.stop_requested

        def load_checkpoint(self, filename_or_checkpoint) -> None:
            """nnU-Net's, also for a checkpoint `train` has loaded already (nnU-Net 2.8.1 types the argument
            `dict | str` but reads only a file name): it is handed to nnU-Net's torch.load, not read again."""
            if not isinstance(filename_or_checkpoint, dict):
                return super().load_checkpoint(filename_or_checkpoint)
            import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as module

            if not self.was_initialized:
                self.initialize()  # outside the block: it builds the network with the real torch
            with _loaded(module, filename_or_checkpoint):
                super().load_checkpoint("<loaded by ibsr-nnunet train>")

        def train_step(self, batch: dict) -> dict:
            result = super().train_step(batch)
            if self._stop_requested():
                # mid-epoch: store this epoch as not yet done, so the rerun repeats it (at most one epoch lost)
                self.current_epoch -= 1
                self._stop_for_requeue()
            return result

        def on_epoch_end(self):
            super().on_epoch_end()  # saves checkpoint_latest every `save_every` epochs, then counts the epoch
            if self.durable is not None:
                self.durable.epoch_finished(self.current_epoch)
            if self._stop_requested() and self.current_epoch < self.num_epochs:
                self.current_epoch -= 1
                self._stop_for_requeue()

        def on_train_end(self):
            super().on_train_end()  # writes checkpoint_final.pth and deletes checkpoint_latest.pth
            Path(self.output_folder, "checkpoint_previous.pth").unlink(missing_ok=True)

        def _finish_loaders(self):
            for loader in (self.dataloader_train, self.dataloader_val):
                if hasattr(loader, "_finish"):
                    loader._finish()

        def _stop_for_requeue(self):
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
            self.current_epoch += 1
            self._finish_loaders()
            self.print_to_log_file(f"{self.durable.signal_name}: saved checkpoint_latest.pth at epoch "
                                   f"{self.current_epoch}; exiting with {EXIT_REQUEUE} (requeue me)")
            raise StopRun(self.durable.signal_name)

    Trainer.__name__ = Trainer.__qualname__ = name
    Trainer.__module__ = "ibsr_trainers"
    return Trainer


class _loaded:
    """While active, the `torch` that nnU-Net's trainer module sees returns `checkpoint` from `torch.load` (and is
    torch for everything else): nnU-Net's load_checkpoint reads a file name only. torch itself is left alone."""

    def __init__(self, module, checkpoint: dict):
        self.module, self.checkpoint = module, checkpoint

    def __enter__(self):
        self.torch = self.module.torch
        self.module.torch = _TorchWith(self.torch, self.checkpoint)

    def __exit__(self, *exc):
        self.module.torch = self.torch


class _TorchWith:
    """torch, but `load` returns the checkpoint already loaded."""

    def __init__(self, torch, checkpoint: dict):
        self._torch, self._checkpoint = torch, checkpoint

    def load(self, *args, **kwargs) -> dict:
        return self._checkpoint

    def __getattr__(self, name: str):
        return getattr(self._torch, name)
