"""`train --seed`: equal seeds train equal nnU-Net folds (weights and logged losses), whatever the number of
augmentation workers and whether the run was killed and resumed; another seed trains another fold."""

import random

import numpy as np
import torch

from ibsr_nnunet.nnunet.seeding import SeededBatches, seed_everything


def test_equal_keys_draw_equal_numbers_and_batches_keep_their_index_across_workers():
    seed_everything(3, 0, 5)
    first = (torch.rand(3), np.random.rand(), random.random())
    seed_everything(3, 0, 5)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    seed_everything(3, 0, 6)
    assert not torch.equal(torch.rand(3), first[0])

    class Draws:
        def generate_train_batch(self):
            return float(torch.rand(1))

    alone = SeededBatches(Draws(), (3, 0), first=4, workers=1)
    stream = [next(alone) for _ in range(6)]
    workers = [SeededBatches(Draws(), (3, 0), first=4, workers=2) for _ in range(2)]
    for thread_id, worker in enumerate(workers):
        worker.set_thread_id(thread_id)
    torch.set_num_threads(2)  # set_thread_id limits a worker process; this one is the test's
    round_robin = [next(workers[i % 2]) for i in range(6)]
    assert round_robin == stream
