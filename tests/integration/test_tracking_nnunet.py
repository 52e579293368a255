"""nnU-Net's own W&B logging switched on by `train --track wandb` (offline), through the real nnunetv2: a fold
stopped by SIGUSR1 after its first epoch and resumed continues the same W&B run, whose id is ours."""

import pytest

from helpers import CLI, cli, copy_workspace, interrupt_when, wandb_offline_runs
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE
from ibsr_nnunet.core.provenance import dataset_fingerprint
from ibsr_nnunet.core.runlog import read_runs
from ibsr_nnunet.core.tracking import tracked_run_id
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name


@pytest.mark.integration
def test_a_tracked_fold_stopped_and_resumed_logs_into_one_wandb_run(planned_ws, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    ws = copy_workspace(planned_ws, tmp_path / "ws")
    epochs, iterations = 2, 8
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(epochs, iterations))
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", str(epochs), "--iterations-per-epoch",
            str(iterations), "--device", "cpu", "--track", "wandb", "--track-project", "ibsr-tests"]
    code, output = interrupt_when([*CLI, "--workspace", str(ws.root), *args], folder / "checkpoint_latest.pth",
                                  timeout=300, wait=120, poll=0.2)
    assert code == EXIT_REQUEUE, output
    resumed = cli(ws.root, *args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    expected = tracked_run_id(folder, dataset_fingerprint(ws))
    runs = wandb_offline_runs(folder)
    assert [run_id for run_id, _ in runs] == [expected, expected], runs
    logged = [{row["_step"]: row for row in rows} for _, rows in runs]
    # epoch 0 was finished and logged by the first run; epoch 1, cut short there, is logged whole by the second
    assert {"train_losses", "val_losses", "mean_fg_dice", "lrs"} <= set(logged[0][0])
    assert "train_losses" not in logged[0].get(1, {}) and 0 not in logged[1]
    assert {"train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice"} <= set(logged[1][1])
    recorded = [run.start["tracking"] for run in read_runs(folder)]
    assert recorded == [{"tool": "wandb", "mode": "offline", "project": "ibsr-tests", "run_id": expected}] * 2
