"""Small table-driven checks of the core: stop signals, the registries agreeing, the vocabulary, and an import that
changes nothing in the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from baselines import registry
from ibsr_nnunet.core.environment import prepare_process
from ibsr_nnunet.core.signals import STOP_SIGNALS, StopSignals
from ibsr_nnunet.core.vocabulary import NNUNET_LABELS, TISSUES

# ---- StopSignals ------------------------------------------------------------------------------------------------

@pytest.fixture
def sentinel_handlers():
    """Distinct previous handlers for SIGUSR1 and SIGTERM; the originals come back after the test."""
    originals = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    sentinels = {s: (lambda signum, frame: None) for s in STOP_SIGNALS}
    for s, handler in sentinels.items():
        signal.signal(s, handler)
    yield sentinels
    for s, handler in originals.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("sent, first, name", [
    ([], None, ""),
    ([signal.SIGUSR1], signal.SIGUSR1, "SIGUSR1"),
    ([signal.SIGTERM], signal.SIGTERM, "SIGTERM"),
    ([signal.SIGUSR1, signal.SIGTERM], signal.SIGUSR1, "SIGUSR1"),
    ([signal.SIGTERM, signal.SIGUSR1, signal.SIGTERM], signal.SIGTERM, "SIGTERM"),
])
def test_stop_signals_record_the_first_signal_call_back_once_and_restore_handlers(sentinel_handlers, sent, first, name):
    called = []
    with StopSignals(on_signal=called.append) as stop:
        assert not stop.requested and stop.name == ""
        for signum in STOP_SIGNALS:
            assert signal.getsignal(signum) == stop._handle  # ours while the block runs
        for signum in sent:
            os.kill(os.getpid(), signum)
        assert stop.signum == first and stop.requested == bool(sent) and stop.name == name
    assert called == ([first] if sent else [])  # on_signal once, for the first signal only
    for signum, handler in sentinel_handlers.items():
        assert signal.getsignal(signum) is handler  # the previous handlers are back


def test_stop_signals_without_a_callback(sentinel_handlers):
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is sentinel_handlers[signal.SIGTERM]


# ---- registries and vocabulary ----------------------------------------------------------------------------------

def test_model_registry_is_what_build_model_accepts():
    from baselines.models import MODELS, build_model

    assert MODELS == registry.MODELS
    accepted = []
    for name in (*registry.MODELS, "vnet", "unet", "UNet2d", "resunet3d"):
        try:
            build_model(name, width=2, depth=2, dropout=0.0)
        except ValueError as err:
            assert f"unknown model {name!r}" in str(err)
        else:
            accepted.append(name)
    assert tuple(accepted) == registry.MODELS


def test_loss_registry_is_the_loss_builder_keys():
    from baselines import losses

    assert tuple(losses._CLASSES) == registry.LOSSES == tuple(losses.LOSSES)
    for name in registry.LOSSES:
        assert isinstance(losses.build_loss(name), losses._CLASSES[name])
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.build_loss("hinge")


@pytest.mark.parametrize("mapping, expected", [
    (NNUNET_LABELS, {"background": 0, "CSF": 1, "GM": 2, "WM": 3}),
    (TISSUES, {1: "CSF", 2: "GM", 3: "WM"}),
])
def test_vocabulary(mapping, expected):
    assert mapping == expected and list(mapping.items()) == list(expected.items())


# ---- the process environment ------------------------------------------------------------------------------------

def test_importing_the_package_changes_nothing_in_the_environment():
    """Every module imported in a fresh interpreter: os.environ before == after (prepare_process is for main())."""
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import ibsr_nnunet, ibsr_nnunet.cli, ibsr_nnunet.segment, ibsr_nnunet.demo\n"
        "import ibsr_nnunet.nnunet.environment, ibsr_nnunet.nnunet.train, ibsr_nnunet.nnunet.ensemble\n"
        "import ibsr_nnunet.evaluation.leaderboard, ibsr_nnunet.campaign.submit, baselines.train, baselines.infer\n"
        "after = dict(os.environ)\n"
        "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
        " if before.get(k) != after.get(k)}))\n")
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("nnUNet_") or k in ("OMP_WAIT_POLICY", "MPLBACKEND"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}


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
