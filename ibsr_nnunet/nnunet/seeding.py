"""Seeded nnU-Net training: every random draw comes from (seed, stream, index), so equal seeds train equal folds.

nnU-Net seeds nothing, and its NonDetMultiThreadedAugmenter hands batches over in whichever order its workers
finish them. Here each batch is drawn after seeding python's `random`, numpy and torch from (seed, its stream,
its index in the stream), and the batches reach the trainer in index order: the stream is the same whatever the
number of workers, and a run resumed at epoch k starts it where an unbroken run is at epoch k.
"""

from __future__ import annotations

import contextlib
import os
import random

# the streams of one seed: one per data loader, one for the trainer process (weights, then each epoch)
TRAIN_BATCHES, VALIDATION_BATCHES, NETWORK_INIT, EPOCH_START = range(4)


def seed_everything(*key: int) -> None:
    """Seed python's `random`, numpy's global generator and torch from the whole `key`."""
    import numpy as np
    import torch

    state = np.random.SeedSequence(list(key)).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


class SeededBatches:
    """An nnU-Net data loader whose batch `i` is drawn right after `seed_everything(*key, i)`, from `first` on.

    In an augmentation worker (`set_thread_id`, as batchgenerators' MultiThreadedAugmenter calls it) worker w of n
    draws batches first + w, first + w + n, ...; the augmenter's round robin over its workers restores the order."""

    def __init__(self, loader, key: tuple[int, ...], first: int, workers: int):
        self.loader, self.key, self.workers = loader, key, max(1, workers)
        self.first = self.next_index = first
        self.step = 1

    def set_thread_id(self, thread_id: int) -> None:
        import torch

        torch.set_num_threads(1)  # as nnU-Net's own workers: the trainer has the cores
        self.next_index, self.step = self.first + thread_id, self.workers

    def __iter__(self):
        return self

    def __next__(self):
        seed_everything(*self.key, self.next_index)
        self.next_index += self.step
        return self.loader.generate_train_batch()


def ordered_augmenter(loader, key: tuple[int, ...], *, first: int, workers: int, pin_memory: bool):
    """`loader`'s seeded batches from index `first`, drawn by `workers` processes (0: in this one), in order."""
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

    batches = SeededBatches(loader, key, first, workers)
    if workers == 0:
        return SingleThreadedAugmenter(batches, None)
    return MultiThreadedAugmenter(batches, None, workers, num_cached_per_queue=max(2, 6 // workers),
                                  pin_memory=pin_memory, wait_time=0.002)


@contextlib.contextmanager
def loaders_in_this_process():
    """nnU-Net builds its data loaders without starting augmentation workers (nnUNet_n_proc_DA=0) meanwhile."""
    previous = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["nnUNet_n_proc_DA"]
        else:
            os.environ["nnUNet_n_proc_DA"] = previous


def seeded_dataloaders(trainer, build, seed: int):
    """(train, validation) augmenters of `trainer` whose batches follow `seed`; `build` is nnU-Net's
    get_dataloaders, whose loaders are kept and whose unordered augmenters are never started."""
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    workers = get_allowed_n_proc_DA()
    with loaders_in_this_process():
        train, validation = build()
    pin = trainer.device.type == "cuda"
    epoch = trainer.current_epoch
    return (ordered_augmenter(train.data_loader, (seed, TRAIN_BATCHES), first=epoch * trainer.num_iterations_per_epoch,
                              workers=workers, pin_memory=pin),
            ordered_augmenter(validation.data_loader, (seed, VALIDATION_BATCHES),
                              first=epoch * trainer.num_val_iterations_per_epoch,
                              workers=max(1, workers // 2) if workers else 0, pin_memory=pin))
