"""core.environment: prepare_process sets the process defaults and a user's values win."""

from __future__ import annotations

import os

import pytest

from ibsr_nnunet.core.environment import prepare_process


@pytest.mark.parametrize("preset, expected", [
    ({}, {"OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}),
    ({"OMP_WAIT_POLICY": "ACTIVE", "MPLBACKEND": "pdf"}, {"OMP_WAIT_POLICY": "ACTIVE", "MPLBACKEND": "pdf"}),
    ({"MPLBACKEND": "svg"}, {"OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "svg"}),
])
def test_prepare_process_sets_defaults_and_a_users_values_win(monkeypatch, preset, expected):
    for key in ("OMP_WAIT_POLICY", "MPLBACKEND"):
        monkeypatch.setenv(key, "placeholder")  # recorded first, so the test's end restores what was there
        monkeypatch.delenv(key)
    for key, value in preset.items():
        monkeypatch.setenv(key, value)
    prepare_process()
    assert {k: os.environ.get(k) for k in expected} == expected
