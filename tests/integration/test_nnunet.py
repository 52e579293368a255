"""Real nnunetv2 on a small phantom, through the real CLI in subprocesses (nnU-Net needs a __main__ guard).

Training tests are integration tests; the refusal without plans runs in-process in the fast loop."""

import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import CLI, cli, copy_workspace, interrupt_when as interrupt_process
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE, EXIT_STALLED
from ibsr_nnunet.core.locks import lock_path
from ibsr_nnunet.core.runlog import read_runs
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import trainer_name


@pytest.fixture(scope="module")
def planned(planned_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's planned seed-0 phantom workspace (this module trains folds 0 and 1 in it)."""
    return copy_workspace(planned_ws, tmp_path_factory.mktemp("nnunet") / "ws")


def fold_dir(ws: Workspace, config: str, fold: int, epochs: int, iterations: int) -> Path:
    return ws.results_dataset / f"{trainer_name(epochs, iterations)}__nnUNetPlans__{config}" / f"fold_{fold}"


def tiny_fold(ws: Workspace, fold: int, epochs: int, iterations: int) -> tuple[Path, list[str]]:
    """(fold folder, `train` arguments) for a tiny 2d CPU schedule."""
    args = ["train", "--fold", str(fold), "--config", "2d", "--epochs", str(epochs),
            "--iterations-per-epoch", str(iterations), "--device", "cpu"]
    return fold_dir(ws, "2d", fold, epochs, iterations), args


def checkpoint_epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["current_epoch"]


def interrupt_when(ws: Workspace, args: list[str], ready: Path) -> tuple[int, str]:
    """Start `train`, send SIGUSR1 once `ready` exists, return (exit code, output)."""
    return interrupt_process([*CLI, "--workspace", str(ws.root), *args], ready, timeout=300, wait=120, poll=0.2)


@pytest.mark.integration
def test_plan_writes_both_configurations_and_is_idempotent(planned):
    plans = json.loads((planned.preprocessed_dataset / "nnUNetPlans.json").read_text())
    assert {"2d", "3d_fullres"} <= set(plans["configurations"])
    assert (planned.preprocessed_dataset / "nnUNetPlans_2d").is_dir()
    assert (planned.preprocessed_dataset / "nnUNetPlans_3d_fullres").is_dir()
    start = time.perf_counter()
    again = cli(planned.root, "plan", "--jobs", "2")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert time.perf_counter() - start < 20
    assert "2d" in again.stdout and "3d_fullres" in again.stdout


@pytest.mark.integration
def test_sigusr1_saves_exits_75_and_resumes_at_next_epoch(planned):
    epochs, iterations = 4, 3
    folder, args = tiny_fold(planned, 0, epochs, iterations)
    code, output = interrupt_when(planned, args, folder / "checkpoint_latest.pth")
    assert code == EXIT_REQUEUE, output
    saved = checkpoint_epoch(folder / "checkpoint_latest.pth")
    assert 1 <= saved < epochs
    assert not [line for line
                in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if "-m ibsr_nnunet" in line and "train" in line and str(planned.root) in line]  # no orphans

    resumed = cli(planned.root, *args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (f"resuming {trainer_name(epochs, iterations)} 2d fold 0 from checkpoint_latest.pth at epoch {saved}"
            in resumed.stdout)
    final = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == epochs
    assert len(final["logging"]["train_losses"]) == epochs  # every epoch logged once, none from scratch
    assert final["optimizer_state"]["state"]  # momentum buffers carried through
    # the resumed run's first epoch uses the poly learning rate of epoch `saved`, not of epoch 0
    logs = sorted(folder.glob("training_log_*.txt"))
    assert len(logs) == 2
    second = logs[-1].read_text()
    expected_lr = 1e-2 * (1 - saved / epochs) ** 0.9
    assert re.findall(r": Epoch (\d+)\s*$", second, re.MULTILINE) == [str(e) for e in range(saved, epochs)]
    lr_line = next(line for line in second.splitlines() if "Current learning rate" in line)
    assert math.isclose(float(lr_line.split(":")[-1]), expected_lr, rel_tol=1e-3)
    assert (folder / "validation" / "summary.json").is_file()
    assert "Using torch.compile" not in resumed.stdout  # its CPU validation predicts with the plain network
    assert list((folder / "validation").glob("*.npz"))  # probabilities, as --npz

    start = time.perf_counter()
    done = cli(planned.root, *args)
    assert done.returncode == 0 and "already finished" in done.stdout
    assert time.perf_counter() - start < 15

    # our own history: the USR1 run and the run that finished (the no-op call above records nothing)
    first, second = read_runs(folder)
    assert (first.reason, first.epoch_start, first.epoch_end, first.end["exit_code"]) == (
        "usr1", 0, saved, EXIT_REQUEUE)
    assert (second.reason, second.epoch_start, second.epoch_end, second.start["epochs_redone"]) == (
        "finished", saved, epochs, 0)
    for run in (first, second):
        assert run.start["device"] == "cpu" and run.start["compile"] is False  # nnU-Net never compiles on CPU
        assert (folder / run.start["log"]).is_file() and run.seconds > 0 and run.end["startup_seconds"] > 0


@pytest.mark.integration
def test_two_usr1_runs_without_a_finished_epoch_stall_with_76(planned):
    """USR1 as soon as the run holds its lock (a slot shorter than start-up plus one epoch): the first run saves and
    asks for a requeue, the second sees the same and exits 76 instead."""
    folder, args = tiny_fold(planned, 0, 3, 40)
    codes = []
    for _ in range(2):
        code, output = interrupt_when(planned, [*args, "--no-compile"], lock_path(folder))
        codes.append(code)
    assert codes == [EXIT_REQUEUE, EXIT_STALLED], output
    assert "longer --time or a smaller --signal-grace" in " ".join(output.split())
    runs = read_runs(folder)
    assert [(r.reason, r.epoch_start, r.epoch_end, r.end["stalled"]) for r in runs] == [
        ("usr1", 0, 0, False), ("usr1", 0, 0, True)]
    assert runs[1].end["exit_code"] == EXIT_STALLED


@pytest.mark.integration
def test_truncated_checkpoint_falls_back_to_previous(planned):
    epochs, iterations = 4, 3
    folder, args = tiny_fold(planned, 1, epochs, iterations)
    code, output = interrupt_when(planned, args, folder / "checkpoint_previous.pth")
    assert code == EXIT_REQUEUE, output
    previous_epoch = checkpoint_epoch(folder / "checkpoint_previous.pth")
    latest = folder / "checkpoint_latest.pth"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])

    resumed = cli(planned.root, *args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "checkpoint_latest.pth is unreadable" in resumed.stdout
    assert f"from checkpoint_previous.pth at epoch {previous_epoch}" in resumed.stdout
    assert checkpoint_epoch(folder / "checkpoint_final.pth") == epochs
    assert not (folder / "checkpoint_previous.pth").exists()
