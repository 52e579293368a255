"""What every resumable run does, nnU-Net folds and baselines alike: its stop signals, its folder's lock, its
dataset record, its history in runs.jsonl, and how it ended, as an exit code.

    with DurableRun(folder, what="2d fold 0", command="ibsr-nnunet train ...", history="train") as run:
        ...                          # refuse bad input: SIGUSR1/SIGTERM are already recorded, never fatal
        run.acquire()                # the folder's lock (LockedError, 73; recorded in runs.jsonl)
        run.hold(reading(...))       # further locks, released with the folder's
        run.record_provenance(fingerprint, **details)  # once per run
        run.open_history()           # from here on, how the run ends is recorded
        run.begin(epoch=..., ...)    # the start line, once the starting epoch and device are known
        ...   run.verify_lock() before each save, run.epoch_finished(n) after each epoch,
        ...   once saved after a stop signal: raise StopRun(run.signal_name)
        return TrainOutcome(...)

How the work leaves the block decides the end line and the exception the command leaves with (ENDINGS): it
returns (finished, 0); StopRun (usr1 | term: Requeue, 75; Stalled, 76 when this run and the one before both
finished no epoch); LockedError (locked, 73); LockLost (no end line: the folder is another writer's now, 73);
KeyboardInterrupt (interrupt, 130); InputError (crash, 1); anything else (crash, 1).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

from . import provenance
from .errors import InputError, LockedError, LockLost, Requeue, Stalled
from .exitcodes import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_REFUSED, EXIT_REQUEUE
from .locks import Lock, lock_path
from .runlog import RunLog, record_locked, stall_message
from .signals import StopSignals

# how a run ended -> (runs.jsonl reason, exit code); StopRun's reason is its signal's, Stalled's code is 76
ENDINGS = {"finished": 0, "usr1": EXIT_REQUEUE, "term": EXIT_REQUEUE, "locked": EXIT_LOCKED,
           "interrupt": EXIT_INTERRUPTED, "crash": EXIT_REFUSED}


class StopRun(BaseException):
    """Raised by the training code once its checkpoint is safe after a stop signal; DurableRun turns it into
    Requeue or Stalled. A BaseException, so that no `except Exception` of nnU-Net's or torch's swallows it."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@dataclass(frozen=True)
class TrainOutcome:
    """What one training call did, nnU-Net fold or baseline: status "finished" or "already finished"."""

    folder: Path
    status: str
    start_epoch: int
    epochs_done: int
    resumed_from: Optional[str] = None  # nnU-Net: the checkpoint file resumed from; None: a fresh start
    best_val_loss: float = math.nan  # baselines: their own validation
    best_val_dice: float = math.nan
    train_seconds: float = math.nan  # baselines: summed across resumes
    log: tuple[dict, ...] = ()  # baselines: log.csv's rows


def exit_code(error: Optional[BaseException]) -> int:
    """The exit status a command leaves with after `error` (None: it succeeded)."""
    if error is None:
        return 0
    if isinstance(error, InputError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else (0 if error.code is None else EXIT_REFUSED)
    return EXIT_REFUSED


def conclude(log: RunLog, error: Optional[BaseException], folder: Path) -> Optional[BaseException]:
    """Append the end line of how the run left (ENDINGS) and return what the command leaves with: None (exit 0),
    Requeue or Stalled for a StopRun, else `error` itself."""
    if error is None:
        log.end("finished")
        return None
    if isinstance(error, StopRun):
        reason = "usr1" if error.signal_name == "SIGUSR1" else "term"
        if log.end(reason, exit_code=EXIT_REQUEUE):
            return Stalled(stall_message(log.epoch))
        return Requeue(f"interrupted by {error.signal_name}: checkpoint saved at epoch {log.epoch} in {folder}; run "
                       f"the same command again to resume (exit {EXIT_REQUEUE}: requeue me).")
    if isinstance(error, LockLost):
        log.ended = True  # the folder is another writer's now: its history is not ours to write
    elif isinstance(error, LockedError):
        log.end("locked", exit_code=EXIT_LOCKED)
    elif isinstance(error, KeyboardInterrupt):
        log.end("interrupt", exit_code=EXIT_INTERRUPTED)
    else:
        log.end("crash", exit_code=exit_code(error))
    return error


class DurableRun:
    """One resumable run of `folder` (see the module docstring). `what`: the folder in words, for the lock's
    sentences; `command`: the command line, for the lock's holder; `history`: the command in runs.jsonl."""

    def __init__(self, folder: Path, *, what: str, command: str, history: str,
                 on_signal: Optional[Callable[[int], None]] = None, say: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.what, self.command, self.history = what, command, history
        self.say = say
        self.started = time.time()
        self.stop = StopSignals(on_signal=on_signal)
        self.lock: Optional[Lock] = None
        self.log: Optional[RunLog] = None
        self.provenance_written = False
        self._held = ExitStack()

    # ---- the block ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "DurableRun":
        self.stop.__enter__()  # first: a signal during start-up is recorded, never fatal
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        try:
            leaving = error
            if self.log is not None and not self.log.ended and (self.log.begun or self.folder.is_dir()):
                leaving = conclude(self.log, error, self.folder)  # bad input refused before the folder leaves none
            elif isinstance(error, StopRun):  # stopped before the run opened its history: nothing to resume yet
                leaving = Requeue(f"interrupted by {error.signal_name} before {self.what} started; run the same "
                                  f"command again.")
        finally:
            self._held.close()
            self.stop.__exit__(None, None, None)
        if leaving is not error:
            raise leaving from None
        return False

    # ---- what the work calls ------------------------------------------------------------------------------------
    def acquire(self) -> Lock:
        """Take the folder's lock, held until the block ends; LockedError (recorded in runs.jsonl of a folder that
        exists) when another live writer holds it."""
        try:
            self.lock = self._held.enter_context(Lock(lock_path(self.folder), self.what, self.command, say=self.say))
        except LockLost:
            raise
        except LockedError:
            record_locked(self.folder, self.history)
            raise
        return self.lock

    def hold(self, context: ContextManager[Any]) -> Any:
        """Enter `context` (a reader lock, ...) until the block ends; a LockedError from it is recorded like the
        folder's own."""
        try:
            return self._held.enter_context(context)
        except LockLost:
            raise
        except LockedError:
            record_locked(self.folder, self.history)
            raise

    def record_provenance(self, fingerprint: str, **details: Any) -> None:
        """Check and record the dataset the folder is made from, once per run (creating the folder): InputError
        when it records another dataset (`ibsr-nnunet train --archive-stale` moves such a folder aside first)."""
        if self.provenance_written:
            return
        why = provenance.contradicts(self.folder, fingerprint)
        if why:
            raise InputError(f"{self.folder} is stale: {why}; run `ibsr-nnunet train --archive-stale` (or move the "
                             f"folder away) to train it afresh.")
        self.folder.mkdir(parents=True, exist_ok=True)
        provenance.write_provenance(self.folder, fingerprint, **details)
        self.provenance_written = True

    def open_history(self) -> RunLog:
        """From now on the run's end is recorded in runs.jsonl (its start line comes with `begin`)."""
        if self.log is None:
            self.log = RunLog(self.folder, self.history, started=self.started)
        return self.log

    def begin(self, *, epoch: Optional[int], **details: Any) -> None:
        """The run's start line: the epoch it starts from, its device and whatever else `details` records."""
        self.open_history().begin(epoch=epoch, **details)

    def epoch_finished(self, epochs_done: int) -> None:
        if self.log is not None:
            self.log.epoch_finished(epochs_done)

    def verify_lock(self) -> None:
        """LockLost when the folder's lock is no longer ours: called before each checkpoint."""
        if self.lock is not None:
            self.lock.verify()

    @property
    def stop_requested(self) -> bool:
        return self.stop.requested

    @property
    def signal_name(self) -> str:
        return self.stop.name

