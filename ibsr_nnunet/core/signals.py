"""The one stop-on-signal mechanism of nnU-Net training and the baselines: SIGUSR1/SIGTERM ask for save-and-stop."""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopSignals:
    """While active, SIGUSR1 and SIGTERM only record the first signal; the training loop saves and stops at its next
    check. The previous handlers come back when the block ends.

    Forked children (nnU-Net's data-augmentation workers) inherit the handler but ignore the signal: only the process
    that entered the block records it, and it stops its workers itself. Workers that died on SIGTERM would make the
    trainer fail before it saves (SLURM signals every process of a job).
    """

    def __init__(self, on_signal: Optional[Callable[[int], None]] = None):
        self.signum: Optional[int] = None
        self._on_signal = on_signal
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "StopSignals":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if os.getpid() == self._pid and self.signum is None:
            self.signum = signum
            if self._on_signal:
                self._on_signal(signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
