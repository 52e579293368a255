"""`ibsr-nnunet demo`: the whole pipeline on the embedded phantom, on CPU, ending in one leaderboard row per model."""

import numpy as np
import pandas as pd
import pytest

from baselines.registry import MODELS as BASELINES
from helpers import invoke

MODELS = {"nnunet_2d", "nnunet_3d_fullres", "nnunet_ensemble", *(f"{m}__dice_ce" for m in BASELINES)}


@pytest.mark.integration
def test_demo_runs_the_pipeline_to_a_leaderboard(tmp_path):
    ws = tmp_path / "demo-ws"
    result = invoke(ws, "demo", "--device", "cpu", "--jobs", "2")
    assert result.exit_code == 0, result.output
    board = pd.read_csv(ws / "leaderboard.csv")
    assert set(board["model"]) == MODELS and len(board) == len(MODELS)
    assert board["rank"].tolist() == list(range(1, len(MODELS) + 1))
    # the demo phantom's Validation_Set: 5 held-out cases, the fewest for which the leaderboard gives intervals
    assert (board["cases"] == "IBSR_06;IBSR_07;IBSR_08;IBSR_09;IBSR_10").all() and (board["n_cases"] == 5).all()
    assert board["mean_dice"].is_monotonic_decreasing
    for tissue in ("CSF", "GM", "WM"):
        assert board[f"{tissue}_dice_mean"].between(0, 1).all()
        assert (board[f"{tissue}_avd_mean"] >= 0).all()
        for metric in ("hd", "hd95"):  # inf when a model predicts none of a tissue: allowed, never negative
            assert (board[f"{tissue}_{metric}_mean"] >= 0).all()
    assert (board["train_seconds"] > 0).all() and np.isfinite(board["train_seconds"]).all()
    # a comparison, not only a pipeline that runs: every model segments all three tissues, CSF included
    dice = board.set_index("model")
    assert (dice["CSF_dice_mean"] >= 0.3).all(), dice["CSF_dice_mean"].to_dict()
    assert (dice[["GM_dice_mean", "WM_dice_mean"]] >= 0.5).all().all(), dice[["GM_dice_mean", "WM_dice_mean"]]
    for png in ("dice_boxplot.png", "overlay_IBSR_06.png", "training_curves.png"):
        assert (ws / "figures" / png).stat().st_size > 10_000
    assert "leaderboard:" in result.output and "nnunet_ensemble" in result.output
