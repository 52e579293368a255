"""core/durable.py: how a resumable run ends -> its runs.jsonl end line and the exception (exit code) the command
leaves with; the lock, provenance once, and a refused run."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.core import provenance
from ibsr_nnunet.core.durable import DurableRun, StopRun, exit_code
from ibsr_nnunet.core.errors import InputError, LockedError, LockLost, Requeue, Stalled
from ibsr_nnunet.core.exitcodes import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_REFUSED, EXIT_REQUEUE, EXIT_STALLED
from ibsr_nnunet.core.locks import Lock, lock_path
from ibsr_nnunet.core.runlog import RUNS_FILE, read_runs


def run_of(folder, work) -> None:
    """A durable run of `folder` that takes its lock, starts at epoch 1, finishes epoch 2, then does `work`."""
    with DurableRun(folder, what="fold 0", command="test", history="train", say=lambda _: None) as run:
        run.acquire()
        run.record_provenance("f" * 64)
        run.begin(epoch=1, device="cpu", device_name="cpu")
        run.epoch_finished(2)
        work()


def raising(error: BaseException):
    def work():
        raise error
    return work


@pytest.mark.parametrize("error, leaves, match, reason, code", [
    (StopRun("SIGUSR1"), Requeue, r"^interrupted by SIGUSR1: checkpoint saved at epoch 2 in .*fold; run the same",
     "usr1", EXIT_REQUEUE),
    (StopRun("SIGTERM"), Requeue, r"^interrupted by SIGTERM: checkpoint saved at epoch 2", "term", EXIT_REQUEUE),
    (LockedError("a reader reads it"), LockedError, r"^a reader reads it$", "locked", EXIT_LOCKED),
    (KeyboardInterrupt(), KeyboardInterrupt, r"^$", "interrupt", EXIT_INTERRUPTED),
    (InputError("bad input; fix it."), InputError, r"^bad input; fix it\.$", "crash", EXIT_REFUSED),
    (RuntimeError("CUDA out of memory"), RuntimeError, r"^CUDA out of memory$", "crash", EXIT_REFUSED),
], ids=["usr1", "term", "locked", "interrupt", "refused", "crash"])
def test_the_ending_decides_the_end_line_and_the_exit_code(tmp_path, error, leaves, match, reason, code):
    folder = tmp_path / "fold"
    with pytest.raises(leaves, match=match) as left:
        run_of(folder, raising(error))
    assert exit_code(left.value) == code
    [run] = read_runs(folder)
    assert (run.reason, run.end["exit_code"], run.epoch_end) == (reason, code, 2)
    assert not lock_path(folder).exists()  # released, whatever the ending


def test_a_finished_run_exits_0_with_a_finished_line(tmp_path):
    run_of(tmp_path / "fold", lambda: None)
    [run] = read_runs(tmp_path / "fold")
    assert (run.reason, run.end["exit_code"]) == ("finished", None) and exit_code(None) == 0


def test_two_usr1_runs_without_a_finished_epoch_stall_with_76(tmp_path):
    folder = tmp_path / "fold"
    folder.mkdir()

    def no_epoch(attempt_error):
        with DurableRun(folder, what="fold 0", command="test", history="train") as run:
            run.acquire()
            run.begin(epoch=4, device="cpu", device_name="cpu")
            raise attempt_error

    with pytest.raises(Requeue, match=r"^interrupted by SIGUSR1: checkpoint saved at epoch 4") as first:
        no_epoch(StopRun("SIGUSR1"))
    with pytest.raises(Stalled, match=r"^stalled: .* at epoch 4 without finishing an epoch.*exiting with 76") as then:
        no_epoch(StopRun("SIGUSR1"))
    assert (exit_code(first.value), exit_code(then.value)) == (EXIT_REQUEUE, EXIT_STALLED)
    assert [r.end["stalled"] for r in read_runs(folder)] == [False, True]


def test_a_lost_lock_leaves_with_73_and_writes_no_end_line(tmp_path):
    folder = tmp_path / "fold"
    folder.mkdir()
    with pytest.raises(LockLost, match=r"^lost the lock on fold 0: the lock file .* was deleted; stopped") as lost:
        with DurableRun(folder, what="fold 0", command="test", history="train") as run:
            run.acquire()
            run.begin(epoch=1, device="cpu", device_name="cpu")
            before = (folder / RUNS_FILE).read_bytes()
            lock_path(folder).unlink()  # deleted under it: the lock is no longer ours
            run.verify_lock()
    assert exit_code(lost.value) == EXIT_LOCKED
    assert (folder / RUNS_FILE).read_bytes() == before


def test_a_locked_folder_is_refused_with_73_and_recorded(tmp_path):
    folder = tmp_path / "fold"
    folder.mkdir()
    with Lock(lock_path(folder), "fold 0", "the other writer"):
        with pytest.raises(LockedError, match=r"^fold 0 is being written by PID \d+ .*`the other writer`") as held:
            with DurableRun(folder, what="fold 0", command="test", history="train") as run:
                run.acquire()
    assert exit_code(held.value) == EXIT_LOCKED
    assert [(r.reason, r.end["exit_code"]) for r in read_runs(folder)] == [("locked", EXIT_LOCKED)]


def test_provenance_is_checked_and_written_once_per_run(tmp_path):
    folder = tmp_path / "fold"
    with DurableRun(folder, what="fold 0", command="test", history="train") as run:
        run.record_provenance("a" * 64, fold=0)
        written = (folder / provenance.PROVENANCE_FILE).stat().st_mtime_ns
        run.record_provenance("a" * 64, fold=0)  # the trainer's hook asking again: nothing rewritten
        assert (folder / provenance.PROVENANCE_FILE).stat().st_mtime_ns == written
    assert json.loads((folder / provenance.PROVENANCE_FILE).read_text())["dataset_fingerprint"] == "a" * 64
    with pytest.raises(InputError, match=r"is stale: made from dataset aaaaaaaaaaaa.*--archive-stale"):
        with DurableRun(folder, what="fold 0", command="test", history="train") as run:
            run.record_provenance("b" * 64)


def test_bad_input_before_the_folder_exists_leaves_nothing(tmp_path):
    folder = tmp_path / "fold"
    with pytest.raises(InputError, match="^--epochs must be at least 1.$"):
        with DurableRun(folder, what="fold 0", command="test", history="train") as run:
            run.open_history()
            raise InputError("--epochs must be at least 1.")
    assert not folder.exists()


def test_a_stop_before_the_run_opened_its_history_asks_for_a_requeue(tmp_path):
    with pytest.raises(Requeue, match=r"^interrupted by SIGTERM before fold 0 started") as left:
        with DurableRun(tmp_path / "fold", what="fold 0", command="test", history="train"):
            raise StopRun("SIGTERM")
    assert exit_code(left.value) == EXIT_REQUEUE


@pytest.mark.parametrize("error, code", [
    (None, 0), (InputError("x"), EXIT_REFUSED), (LockedError("x"), EXIT_LOCKED), (LockLost("x"), EXIT_LOCKED),
    (Requeue("x"), EXIT_REQUEUE), (Stalled("x"), EXIT_STALLED), (KeyboardInterrupt(), EXIT_INTERRUPTED),
    (SystemExit(3), 3), (SystemExit("a sentence"), EXIT_REFUSED), (RuntimeError("x"), EXIT_REFUSED),
])
def test_exit_codes_of_the_error_family(error, code):
    assert exit_code(error) == code
