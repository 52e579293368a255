"""bench/gpu_campaign.py: the whole one-call campaign on CPU with a small phantom (so it cannot rot between GPU
runs): every step runs, and the report holds the budgets and a leaderboard of nnU-Net and the four baselines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.integration
def test_the_whole_campaign_runs_on_cpu_with_a_small_phantom(tmp_path):
    report = tmp_path / "GPU.md"
    report.write_text("# GPU check\n\nkept\n")
    done = subprocess.run([sys.executable, str(BENCH / "gpu_campaign.py"), "--device", "cpu", "--smoke", "--keep",
                           str(tmp_path / "run"), "--out", str(report)], capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# GPU check\n\nkept\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | done | " in line]
    assert len(rows) == 15, text  # convert, plan, 2 folds, ensemble, 4 × (train, predict), leaderboard, segment
    cells = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
    board = {cell[1] for cell in cells if len(cell) > 2}
    assert {"nnunet_2d", "nnunet_3d_fullres", "nnunet_ensemble", "unet2d__dice_ce", "resunet2d__dice_ce",
            "denseunet2d__dice_ce", "unet3d__dice_ce"} <= board, text
    assert "Budgets (smoke run): nnU-Net 1 epoch × 2 iterations" in text
