"""The one family of errors the user can fix: each carries its sentence (str) and the command's exit status."""

from __future__ import annotations

from typing import Any

from .exitcodes import EXIT_LOCKED, EXIT_REFUSED, EXIT_REQUEUE, EXIT_STALLED


class InputError(Exception):
    """Bad input or state the user can fix; str(error) names the file, what is wrong and the fix. `exit_code` is
    the command's exit status when it is refused; `label` heads the sentence on stderr ("" for none)."""

    exit_code = EXIT_REFUSED
    label = "error"


class LockedError(InputError):
    """Another live writer holds the lock (or a reader reads what this command would write); str() names it."""

    exit_code = EXIT_LOCKED

    def __init__(self, message: str, holder: Any = None):
        super().__init__(message)
        self.holder = holder  # the locks.Holder named, when known


class LockLost(LockedError):
    """This process held the lock and lost it (deleted, or taken over); it must stop writing at once."""


class Requeue(InputError):
    """A resumable run stopped after saving (SIGUSR1/SIGTERM: the time limit or a preemption): run it again."""

    exit_code = EXIT_REQUEUE
    label = ""


class Stalled(InputError):
    """Stopped like Requeue, but this run and the one before both finished no epoch: a requeue would only loop."""

    exit_code = EXIT_STALLED
    label = ""
