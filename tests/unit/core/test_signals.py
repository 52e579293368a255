"""core.signals: StopSignals records the first stop signal, calls back once and restores the handlers."""

from __future__ import annotations

import os
import signal

import pytest

from ibsr_nnunet.core.signals import STOP_SIGNALS, StopSignals

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
