"""bench/gpu_check.py and its install recipe: the timing arithmetic on known numbers, the recipe's wheel list against
what the imports really load (the whole check on CPU: tests/integration/test_gpu_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_check  # bench/ is on pytest's pythonpath
import gpu_install

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_steady_epoch_is_the_median_after_the_first():
    assert gpu_check.first_and_steady([30.0, 4.0, 6.0, 5.0]) == (30.0, 5.0)
    with pytest.raises(RuntimeError):
        gpu_check.first_and_steady([3.0])


def test_iterations_per_second_ignores_warm_up_and_validation_pauses():
    # 12 warm-up stamps 1 s apart, then 0.25 s gaps with one 5 s validation pause: the median gap is 0.25 s
    stamps = [float(i) for i in range(12)]
    for _ in range(8):
        stamps.append(stamps[-1] + 0.25)
    stamps.append(stamps[-1] + 5.0)
    for _ in range(4):
        stamps.append(stamps[-1] + 0.25)
    assert gpu_check.iterations_per_second(stamps, skip=11) == pytest.approx(4.0)


def test_compile_note_weighs_the_one_time_cost_against_faster_epochs():
    # without: first 40 s, steady 10 s; with: first 100 s, steady 8 s -> cost (100-8)-(40-10) = 62 s;
    # 250/50 = 5x scale: 50 s vs 40 s per full epoch, 10 s saved -> pays after 6.2 full epochs
    assert gpu_check.compile_note("3d_fullres", (40.0, 10.0), (100.0, 8.0), 5.0) == (
        "3d_fullres: torch.compile costs 62.0 s once per run; steady epochs 1.25x as fast (40.0 s vs 50.0 s per "
        "250 iterations); it pays for itself after 6.2 full epochs of a run")
    assert "makes steady epochs no faster" in gpu_check.compile_note("2d", (5.0, 2.0), (30.0, 2.0), 5.0)


def test_epoch_times_are_read_from_the_newest_training_log(tmp_path):
    (tmp_path / "training_log_2026_1_1_10_00_00.txt").write_text("Epoch time: 99.0 s\n")
    (tmp_path / "training_log_2026_1_2_10_00_00.txt").write_text(
        "2026-01-02 10:00:01.000000: Epoch 0\n2026-01-02 10:00:31.000000: Epoch time: 30.12 s\n"
        "2026-01-02 10:00:31.500000: Epoch 1\n2026-01-02 10:00:36.000000: Epoch time: 4.5 s\n")
    assert gpu_check.epoch_seconds(tmp_path) == [30.12, 4.5]


def test_install_recipe_carries_exactly_what_the_imports_need_beyond_the_image():
    """A fresh interpreter imports the entry points; every distribution it loads is either in the GPU image or in
    the recipe's CARRY, and CARRY holds nothing that is not needed."""
    code = ("import json, sys; sys.path.insert(0, %r); import gpu_install; "
            "print(json.dumps(sorted(gpu_install.imported_distributions())))" % str(BENCH))
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    needed = loaded - gpu_install.IMAGE
    assert needed == set(gpu_install.CARRY), (f"add to CARRY: {sorted(needed - set(gpu_install.CARRY))}; "
                                              f"remove from CARRY: {sorted(set(gpu_install.CARRY) - needed)}")
    assert {"nnunetv2", "simpleitk", "nibabel", "ibsr-nnunet"} <= needed
    assert set(gpu_install.BUILT_HERE) <= set(gpu_install.CARRY)
    assert gpu_install.missing() == []
