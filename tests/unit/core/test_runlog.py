"""runs.jsonl (core/runlog.py): start and end lines, `killed` for a run that left no end, the reasons a run ends,
the stall rule, and whole lines under concurrent appends."""

from __future__ import annotations

import pytest

from helpers import runs_lines
from ibsr_nnunet.core.durable import StopRun, conclude
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED, EXIT_REQUEUE, EXIT_STALLED
from ibsr_nnunet.core.locks import Holder, LockedError, LockLost
from ibsr_nnunet.core.runlog import RUNS_FILE, RunLog, parse_utc, read_runs, record_locked, stalled, utc

SLURM = {"SLURM_JOB_ID": "4711", "SLURM_ARRAY_JOB_ID": "4700", "SLURM_ARRAY_TASK_ID": "3",
         "SLURM_RESTART_COUNT": "2"}


def one_run(folder, reason: str, start: int, end: int, **begin) -> bool:
    log = RunLog(folder, "train")
    log.begin(epoch=start, device="cpu", device_name="cpu", **begin)
    for epoch in range(start + 1, end + 1):
        log.epoch_finished(epoch)
    return log.end(reason, exit_code=EXIT_REQUEUE if reason in ("usr1", "term") else None)


def test_a_run_appends_a_start_and_an_end_line_with_the_slurm_and_device_fields(tmp_path, monkeypatch):
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    log = RunLog(tmp_path, "train", started=1_700_000_000.0)
    log.begin(epoch=5, device="cuda", device_name="NVIDIA H200", compile=True, log="training_log_x.txt")
    log.epoch_finished(6)
    assert log.end("finished") is False
    start, end = runs_lines(tmp_path)
    assert start["event"] == "start" and end["event"] == "end" and start["run"] == end["run"]
    assert start["start"] == "2023-11-14T22:13:20.000000Z" and parse_utc(start["start"]) == 1_700_000_000.0
    assert (start["slurm_job"], start["slurm_job_id"], start["slurm_array_task"], start["slurm_restart_count"]) == (
        "4700_3", "4711", 3, 2)
    assert (start["device"], start["device_name"], start["compile"], start["log"]) == (
        "cuda", "NVIDIA H200", True, "training_log_x.txt")
    assert (start["epoch_start"], start["epochs_redone"], start["command"]) == (5, 0, "train")
    assert start["host"] and start["pid"]
    assert (end["reason"], end["epoch_end"], end["exit_code"], end["stalled"]) == ("finished", 6, None, False)
    assert end["seconds"] == pytest.approx(parse_utc(end["end"]) - 1_700_000_000.0, abs=1e-3)
    assert end["startup_seconds"] is not None and end["startup_seconds"] <= end["seconds"]
    [run] = read_runs(tmp_path)
    assert (run.reason, run.epoch_start, run.epoch_end) == ("finished", 5, 6)


def test_a_start_without_an_end_is_recorded_as_killed_by_the_next_run_with_the_epochs_it_redoes(tmp_path):
    first = RunLog(tmp_path, "train")
    first.begin(epoch=0, device="cpu", device_name="cpu")  # then SIGKILL: no end line
    second = RunLog(tmp_path, "train")
    second.begin(epoch=3, device="cpu", device_name="cpu", reached=5)  # the logs show 5 epochs, the checkpoint 3
    second.end("finished")
    runs = read_runs(tmp_path)
    assert [r.reason for r in runs] == ["killed", "finished"]
    assert runs[0].end["end"] is None and runs[0].seconds is None
    assert runs[1].start["epochs_redone"] == 2
    # the killed line is written before the new start line, and once
    assert [(line["event"], line.get("reason")) for line in runs_lines(tmp_path)] == [
        ("start", None), ("end", "killed"), ("start", None), ("end", "finished")]


def test_lines_cut_short_are_skipped(tmp_path):
    one_run(tmp_path, "usr1", 0, 2)
    with open(tmp_path / RUNS_FILE, "a") as handle:
        handle.write('{"event": "start", "run": "cut')  # a full disk cut this line
    assert [r.reason for r in read_runs(tmp_path)] == ["usr1"]


@pytest.mark.parametrize("error,reason,code", [
    (None, "finished", None),
    (StopRun("SIGUSR1"), "usr1", EXIT_REQUEUE),
    (StopRun("SIGTERM"), "term", EXIT_REQUEUE),
    (LockedError("held", Holder(1, "h", "", None, None, 0, "c", 0.0)), "locked", EXIT_LOCKED),
    (RuntimeError("CUDA out of memory"), "crash", 1),
    (SystemExit(3), "crash", 3),
    (KeyboardInterrupt(), "interrupt", 130),
])
def test_the_end_reason_follows_how_the_run_left(tmp_path, error, reason, code):
    log = RunLog(tmp_path, "baseline train")
    log.begin(epoch=1, device="cpu", device_name="cpu")
    log.epoch_finished(2)
    conclude(log, error, tmp_path)
    [run] = read_runs(tmp_path)
    assert (run.reason, run.end["exit_code"], run.epoch_end) == (reason, code, 2)


def test_a_run_that_lost_its_lock_writes_no_end_line(tmp_path):
    """The folder is another writer's once the lock is lost: the old holder appends nothing to its history."""
    log = RunLog(tmp_path, "train")
    log.begin(epoch=1, device="cpu", device_name="cpu")
    before = (tmp_path / RUNS_FILE).read_bytes()
    assert isinstance(conclude(log, LockLost("lost the lock on fold 0: ..."), tmp_path), LockLost)
    assert (tmp_path / RUNS_FILE).read_bytes() == before


@pytest.mark.parametrize("history,expected", [
    ([("usr1", 4, 4), ("usr1", 4, 4)], True),  # twice stopped by the warning before an epoch ended
    ([("usr1", 0, 3), ("usr1", 3, 3), ("usr1", 3, 3)], True),
    ([("usr1", 0, 3), ("usr1", 3, 3)], False),  # the run before finished epochs
    ([("term", 4, 4), ("term", 4, 4)], False),  # two quick preemptions never stall a job
    ([("usr1", 4, 4), ("term", 4, 4)], False),
    ([("term", 4, 4), ("usr1", 4, 4)], False),
    ([("usr1", 4, 4)], False),
    ([("usr1", 4, 4), ("killed", 4, None), ("usr1", 4, 4)], False),
])
def test_the_stall_rule(tmp_path, history, expected):
    verdicts = []
    for reason, start, end in history:
        if reason == "killed":
            RunLog(tmp_path, "train").begin(epoch=start)
            continue
        verdicts.append(one_run(tmp_path, reason, start, end))
    assert verdicts[-1] is expected and stalled(read_runs(tmp_path)) is expected
    last = read_runs(tmp_path)[-1].end
    assert last["stalled"] is expected and last["exit_code"] == (EXIT_STALLED if expected else EXIT_REQUEUE)


def test_a_locked_run_is_recorded_only_in_a_folder_that_exists_and_marks_no_live_run_killed(tmp_path):
    record_locked(tmp_path / "absent", "train")
    assert not (tmp_path / "absent").exists()
    alive = RunLog(tmp_path, "train")
    alive.begin(epoch=2, device="cpu", device_name="cpu")
    record_locked(tmp_path, "train")
    runs = read_runs(tmp_path)
    assert [r.reason for r in runs] == [None, "locked"] and runs[1].end["exit_code"] == EXIT_LOCKED


def test_utc_round_trips():
    assert utc(None) is None and parse_utc("not a time") is None
    assert parse_utc("2026-11-30T21:22:52Z") == parse_utc(utc(parse_utc("2026-11-30T21:22:52Z")))
