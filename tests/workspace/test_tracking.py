"""Experiment tracking of a baseline run in W&B's offline mode: every epoch logged, and a run stopped by SIGUSR1 and
resumed continues the same W&B run; `--track wandb` refused in one sentence where the package is missing."""

import os
import subprocess
import sys

import pytest

from baselines.run_folder import run_dir
from helpers import CLI, copy_workspace, interrupt_when, invoke, said, wandb_offline_runs
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE
from ibsr_nnunet.core.provenance import dataset_fingerprint
from ibsr_nnunet.core.runlog import read_runs
from ibsr_nnunet.core.tracking import tracked_run_id

TINY = ["--width", "4", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]
REFUSAL = ('--track wandb needs the wandb package, which is not installed here: run `pip install '
           '"ibsr-nnunet[tracking]"` (or leave --track out).')


@pytest.fixture
def wandb_home(tmp_path, monkeypatch) -> dict:
    """W&B's own folders (settings, cache, artifacts) in a temporary place, for this process and its children."""
    env = {name: str(tmp_path / "wandb-home" / name.lower()) for name in
           ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_a_tracked_baseline_run_stopped_and_resumed_logs_every_epoch_into_one_wandb_run(converted_ws, tmp_path,
                                                                                         wandb_home):
    pytest.importorskip("wandb")
    ws = copy_workspace(converted_ws, tmp_path / "ws")
    folder = run_dir(ws, "unet2d", "ce")
    args = [*CLI, "--workspace", str(ws.root), "baseline", "train", "--model", "unet2d", "--loss", "ce",
            "--epochs", "2", "--iterations-per-epoch", "40", *TINY, "--track", "wandb"]
    code, output = interrupt_when(args, folder / "checkpoint.pt", timeout=180, wait=90, env=wandb_home)
    assert code == EXIT_REQUEUE, output  # stopped inside epoch 2, after epoch 1's checkpoint
    again = subprocess.run(args, capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr

    expected = tracked_run_id(folder, dataset_fingerprint(ws))
    runs = wandb_offline_runs(folder)
    assert [run_id for run_id, _ in runs] == [expected, expected]  # two parts of one W&B run
    assert [[row["_step"] for row in rows] for _, rows in runs] == [[1], [2]]  # each epoch once, none redone
    for _, rows in runs:
        assert {"train_loss", "val_loss", "val_dice", "lr", "seconds"} <= set(rows[0])
        assert 0 <= rows[0]["val_dice"] <= 1 and rows[0]["lr"] > 0
    recorded = [run.start["tracking"] for run in read_runs(folder)]
    assert recorded == [{"tool": "wandb", "mode": "offline", "project": "ibsr-nnunet", "run_id": expected}] * 2
    assert not any((tmp_path / "wandb-home").rglob("*.wandb"))  # the run's files live in its folder only


@pytest.mark.parametrize("command", [
    ("baseline", "train", "--model", "unet2d", "--loss", "ce", "--epochs", "1", *TINY),
    ("train", "--fold", "0", "--config", "2d", "--epochs", "1", "--device", "cpu"),
    ("submit", "--configs", "", "--baselines", "unet2d__ce", "--dry-run"),
    ("script", "--fold", "0", "--config", "2d"),
])
def test_tracking_without_the_package_is_refused_before_anything_starts(converted_ws, tmp_path, monkeypatch,
                                                                         command):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as where the extra is not installed
    ws = copy_workspace(converted_ws, tmp_path / "ws")
    result = invoke(ws, *command, "--track", "wandb")
    assert result.exit_code == 1 and REFUSAL in said(result), result.output
    assert not run_dir(ws, "unet2d", "ce").exists() and not ws.results_dataset.exists()
