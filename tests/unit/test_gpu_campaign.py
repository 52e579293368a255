"""bench/gpu_campaign.py's arithmetic: a budget names the same schedules on any machine, and its report section
replaces only its own part of GPU.md (the whole run on CPU: tests/integration/test_gpu_campaign.py)."""

from __future__ import annotations

import gpu_campaign  # bench/ is on pytest's pythonpath
import pytest


def test_a_budget_is_shared_out_into_fixed_schedules():
    plan = gpu_campaign.schedules(240)
    # 2d: 25 % = 60 s, less 20 s of run overhead, at 7.5 s an epoch -> 5; 3d_fullres: 35 % = 84 s -> 64 / 21.9 -> 2
    assert (plan["2d"].epochs, plan["2d"].iterations) == (5, 250)
    assert (plan["3d_fullres"].epochs, plan["3d_fullres"].iterations) == (2, 250)
    assert [plan[m].minutes for m in gpu_campaign.BASELINES] == [0.4] * 4
    assert sum(s.seconds for s in plan.values()) == pytest.approx(240)
    assert gpu_campaign.schedules(10)["3d_fullres"].epochs == 1  # never less than one epoch
    assert plan["2d"].text == "5 epochs × 250 iterations (60 s of the budget)"
    with pytest.raises(ValueError):
        gpu_campaign.schedules(0)


def test_the_report_replaces_its_own_section_and_keeps_the_rest():
    first = gpu_campaign.merged("# GPU check\n\nrows\n", "## campaign\nA")
    assert first == f"# GPU check\n\nrows\n\n{gpu_campaign.BEGIN}\n## campaign\nA\n{gpu_campaign.END}\n"
    again = gpu_campaign.merged(first + "after\n", "## campaign\nB")
    assert again == f"# GPU check\n\nrows\n\n{gpu_campaign.BEGIN}\n## campaign\nB\n{gpu_campaign.END}\nafter\n"
    assert gpu_campaign.merged("", "x") == f"{gpu_campaign.BEGIN}\nx\n{gpu_campaign.END}\n"
