"""nnunet/fold.py: one parser of nnU-Net's training logs (epochs, seconds, losses, pseudo-Dice), merged over the
runs of a fold, and the fold's validation summary."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.nnunet.fold import (
    LoggedEpoch,
    epochs_reached,
    fold_epochs,
    fold_finished,
    log_epochs,
    log_seconds,
    validation_dice,
)

# a run stopped by SIGUSR1 during epoch 2, as nnU-Net 2.8 logs it (a blank line between entries, as it writes)
FIRST_RUN = """\
2026-12-01 10:00:00.000000: Using optimizer SGD

2026-12-01 10:00:01.500000: 
2026-12-01 10:00:01.500000: Epoch 0
2026-12-01 10:00:01.510000: Current learning rate: 0.01
2026-12-01 10:00:04.000000: train_loss 0.1234
2026-12-01 10:00:04.100000: val_loss -0.0567
2026-12-01 10:00:04.200000: Pseudo dice [np.float32(0.4), np.float32(0.5), np.float32(0.6)]
2026-12-01 10:00:04.300000: Epoch time: 2.8 s
2026-12-01 10:00:04.400000: Yayy! New best EMA pseudo Dice: 0.5
2026-12-01 10:00:04.500000: 
2026-12-01 10:00:04.500000: Epoch 1
2026-12-01 10:00:07.000000: train_loss -0.25
2026-12-01 10:00:07.100000: val_loss -3.5e-01
2026-12-01 10:00:07.200000: Pseudo dice [0.7, 0.8]
2026-12-01 10:00:07.300000: Epoch time: 2.75 s
2026-12-01 10:00:07.400000: 
2026-12-01 10:00:07.400000: Epoch 2
2026-12-01 10:00:08.000000: SIGUSR1: saved checkpoint_latest.pth at epoch 2; exiting with 75 (requeue me)
"""
SECOND_RUN = """\
2026-12-01 10:05:00.000000: Epoch 2
2026-12-01 10:05:02.000000: train_loss -0.5
2026-12-01 10:05:02.100000: val_loss -0.55
2026-12-01 10:05:02.200000: Pseudo dice [np.float32(0.9)]
2026-12-01 10:05:02.300000: Epoch time: 2.3 s
2026-12-01 10:05:03.000000: checkpoint_final.pth written in 0.040 s
"""


@pytest.fixture
def fold(tmp_path):
    folder = tmp_path / "fold_0"
    folder.mkdir()
    (folder / "training_log_2026_12_1_10_00_00.txt").write_text(FIRST_RUN)
    (folder / "training_log_2026_12_1_10_05_00.txt").write_text(SECOND_RUN)
    return folder


def test_one_log_parses_into_its_epochs(fold):
    assert log_epochs(fold / "training_log_2026_12_1_10_00_00.txt") == [
        LoggedEpoch(0, seconds=2.8, train_loss=0.1234, val_loss=-0.0567, pseudo_dice=pytest.approx(0.5)),
        LoggedEpoch(1, seconds=2.75, train_loss=-0.25, val_loss=-0.35, pseudo_dice=pytest.approx(0.75)),
        LoggedEpoch(2),  # started, never finished: no seconds, no losses
    ]
    assert [e.finished for e in log_epochs(fold / "training_log_2026_12_1_10_00_00.txt")] == [True, True, False]


def test_the_runs_of_a_fold_merge_by_epoch_the_later_run_winning(fold):
    assert fold_epochs(fold) == [
        LoggedEpoch(0, seconds=2.8, train_loss=0.1234, val_loss=-0.0567, pseudo_dice=pytest.approx(0.5)),
        LoggedEpoch(1, seconds=2.75, train_loss=-0.25, val_loss=-0.35, pseudo_dice=pytest.approx(0.75)),
        LoggedEpoch(2, seconds=2.3, train_loss=-0.5, val_loss=-0.55, pseudo_dice=pytest.approx(0.9)),
    ]
    assert epochs_reached(fold) == 3
    assert log_seconds(fold / "training_log_2026_12_1_10_00_00.txt") == pytest.approx(8.0)
    assert log_seconds(fold / "training_log_2026_12_1_10_05_00.txt") == pytest.approx(3.0)


def test_a_fold_without_logs_or_with_an_unstamped_one_has_no_epochs(tmp_path):
    assert fold_epochs(tmp_path) == [] and epochs_reached(tmp_path) is None
    (tmp_path / "training_log_x.txt").write_text("Epoch 0\ntrain_loss 0.1\nEpoch time: 1.0 s\n")
    assert fold_epochs(tmp_path) == [] and log_seconds(tmp_path / "training_log_x.txt") == 0.0


def test_the_validation_summary_and_finished(fold):
    assert validation_dice(fold) is None and not fold_finished(fold)
    (fold / "checkpoint_final.pth").write_bytes(b"")
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text("{cut sh")
    assert validation_dice(fold) is None and fold_finished(fold)  # a summary cut short reads as none
    (fold / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.8125}}))
    assert validation_dice(fold) == 0.8125
