"""`train --seed`: equal seeds train equal nnU-Net folds (weights and logged losses), whatever the number of
augmentation workers and whether the run was killed and resumed; another seed trains another fold."""

import os
import signal
from pathlib import Path

import pytest
import torch

from helpers import CLI, cli, copy_workspace, interrupt_when
from ibsr_nnunet.core.runlog import read_runs
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import trainer_name


def train_2d(ws: Workspace, seed: int, epochs: int, iterations: int, workers: int) -> tuple[Path, dict]:
    """(fold folder, final checkpoint) of 2d fold 0 trained on CPU with `workers` augmentation workers."""
    args = train_args(ws, seed, epochs, iterations)
    done = cli_with_workers(ws, args, workers)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = fold_folder(ws, epochs, iterations)
    return folder, torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)


def train_args(ws: Workspace, seed: int, epochs: int, iterations: int) -> list[str]:
    return ["train", "--fold", "0", "--config", "2d", "--epochs", str(epochs), "--iterations-per-epoch",
            str(iterations), "--device", "cpu", "--seed", str(seed)]


def cli_with_workers(ws: Workspace, args: list[str], workers: int):
    previous = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    try:
        return cli(ws, *args)
    finally:
        os.environ.pop("nnUNet_n_proc_DA")
        if previous is not None:
            os.environ["nnUNet_n_proc_DA"] = previous


def fold_folder(ws: Workspace, epochs: int, iterations: int) -> Path:
    return ws.results_dataset / f"{trainer_name(epochs, iterations)}__nnUNetPlans__2d" / "fold_0"


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_same_seed_trains_the_same_fold_with_any_worker_count_and_another_seed_differs(planned_ws, tmp_path):
    epochs, iterations = 2, 2
    runs = {name: copy_workspace(planned_ws, tmp_path / name) for name in ("two", "one", "other")}
    _, two = train_2d(runs["two"], 7, epochs, iterations, workers=2)
    _, one = train_2d(runs["one"], 7, epochs, iterations, workers=1)
    folder, other = train_2d(runs["other"], 8, epochs, iterations, workers=2)
    assert two["logging"]["train_losses"] == one["logging"]["train_losses"]
    assert two["logging"]["val_losses"] == one["logging"]["val_losses"]
    assert len(two["logging"]["train_losses"]) == epochs
    assert same_weights(two["network_weights"], one["network_weights"])
    assert two["logging"]["train_losses"] != other["logging"]["train_losses"]
    assert not same_weights(two["network_weights"], other["network_weights"])
    assert read_runs(folder)[-1].start["seed"] == 8


@pytest.mark.integration
def test_a_killed_and_resumed_seeded_fold_ends_as_an_unbroken_one(planned_ws, tmp_path):
    epochs, iterations = 3, 2
    unbroken_ws = copy_workspace(planned_ws, tmp_path / "unbroken")
    resumed_ws = copy_workspace(planned_ws, tmp_path / "resumed")
    _, unbroken = train_2d(unbroken_ws, 7, epochs, iterations, workers=2)

    folder = fold_folder(resumed_ws, epochs, iterations)
    argv = [*CLI, "--workspace", str(resumed_ws.root), *train_args(resumed_ws, 7, epochs, iterations)]
    code, output = interrupt_when(argv, folder / "checkpoint_latest.pth", signal.SIGKILL, poll=0.02,
                                  env={"nnUNet_n_proc_DA": "2"})
    assert code == -signal.SIGKILL and not (folder / "checkpoint_final.pth").exists(), output
    killed_at = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["current_epoch"]
    assert 1 <= killed_at < epochs
    _, resumed = train_2d(resumed_ws, 7, epochs, iterations, workers=2)
    assert read_runs(folder)[-1].start["epoch_start"] == killed_at
    assert resumed["logging"]["train_losses"] == unbroken["logging"]["train_losses"]
    assert same_weights(resumed["network_weights"], unbroken["network_weights"])
