"""bench/gpu_check.py: the whole check on CPU with a small phantom (so that it cannot rot between GPU runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.integration
def test_the_whole_check_runs_on_cpu_with_a_small_phantom(tmp_path):
    report = tmp_path / "GPU.md"
    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--smoke",
                           "--keep", str(tmp_path / "run"), "--out", str(report)],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# GPU check (smoke run: the numbers mean nothing)")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    steps = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert steps == ["convert", "plan 2d + 3d_fullres", "nnU-Net 2d --no-compile", "nnU-Net 3d_fullres --no-compile",
                     "unet2d dice_ce, cpu, mixed precision", "unet3d dice_ce, cpu, mixed precision",
                     "segment 1 scan, unet2d__dice_ce, cpu"], text
    assert sum("per 250-iteration epoch" in row for row in rows) == 2
    assert sum(" it/s" in row for row in rows) == 2
    assert ("Left out: nnU-Net 2d --compile (nnU-Net never compiles on CPU); nnU-Net 3d_fullres --compile (nnU-Net "
            "never compiles on CPU); ensemble + segment with nnunet_ensemble (smoke run).") in text
