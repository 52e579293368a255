"""One writer per place: the lock file, its holder's identity, heartbeats, when a lock is stale, races of many
processes at one instant, a stopped holder, a lost lock, and lock files that are not locks."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import write_holder
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED, EXIT_REQUEUE
from ibsr_nnunet.core.locks import (
    Holder,
    Lock,
    LockedError,
    LockLost,
    process_start_time,
    read_holder,
    why_stale,
)


def test_exit_codes_are_distinct():
    assert EXIT_LOCKED not in (0, 1, 2, EXIT_REQUEUE) and EXIT_LOCKED < 128


def test_acquire_writes_our_identity_and_release_removes_it(tmp_path):
    path = tmp_path / "fold.lock"
    with Lock(path, "fold 0", "train --fold 0") as lock:
        holder = read_holder(path)
        assert (holder.pid, holder.start_time, holder.command, holder.token) == (
            os.getpid(), process_start_time(os.getpid()), "train --fold 0", lock.me.token)
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no record file, no guard left beside it


def test_the_same_pid_with_another_start_time_is_a_new_process():
    me = Holder.me("x")
    assert why_stale(replace(me, start_time="1"), me) == (
        f"PID {me.pid} now belongs to another process (the holder is gone)")
    assert why_stale(me, me) is None


def test_a_live_holder_on_this_host_is_never_stale_whatever_its_heartbeat():
    me = Holder.me("x")
    assert why_stale(replace(me, heartbeat=time.time() - 10 ** 6), me, heartbeat=0.1) is None


@pytest.mark.parametrize("age, heartbeat, stale", [(50, 10, False), (101, 10, True), (5, 0.4, True), (3, 0.4, False)])
def test_another_hosts_lock_is_stale_after_ten_missed_heartbeats(age, heartbeat, stale):
    me = Holder.me("x")
    other = replace(me, host="node7", boot_id="another-boot", pid=1, heartbeat=time.time() - age)
    reason = why_stale(other, me, heartbeat)
    assert (reason is not None) == stale
    if stale:
        assert reason.startswith(f"no heartbeat for {age} s")


@pytest.mark.parametrize("holder_restart, my_restart, stale",
                         [(0, 1, True), (2, 3, True), (1, 1, False), (2, 1, False)])
def test_a_requeued_run_of_the_same_slurm_job_takes_over(holder_restart, my_restart, stale):
    me = replace(Holder.me("x"), slurm_job_id="77_0", slurm_restart_count=my_restart)
    other = replace(me, host="node7", boot_id="b", pid=1, slurm_restart_count=holder_restart)
    assert (why_stale(other, me) is not None) == stale
    assert why_stale(replace(other, slurm_job_id="78_0"), me) is None  # another job: not ours to take


def test_a_pre_seeded_live_holder_refuses_and_nothing_is_overwritten(tmp_path):
    path = tmp_path / "x.lock"
    live = replace(Holder.me("submit"), host="node7", boot_id="b", pid=4242, slurm_job_id="9", command="train")
    write_holder(path, live)
    before = path.read_bytes()
    with pytest.raises(LockedError, match="PID 4242 on node7, SLURM job 9"):
        Lock(path, "x", "train").acquire()
    assert path.read_bytes() == before and read_holder(path).token == live.token


def test_the_heartbeat_is_the_lock_files_mtime_refreshed_while_held(tmp_path):
    path = tmp_path / "x.lock"
    with Lock(path, "x", "train", heartbeat=0.1):
        first = read_holder(path).heartbeat
        time.sleep(0.5)
        assert read_holder(path).heartbeat > first


@pytest.mark.parametrize("content, kind", [
    (b'{"pid": 1, "ho', "cut short"),
    (b"", "empty"),
    (b"\x00\xff garbage", "garbage"),
    (json.dumps({"pid": "12", "host": "h", "boot_id": "", "start_time": None, "slurm_job_id": None,
                 "slurm_restart_count": 0, "command": "c", "heartbeat": "soon"}).encode(), "bad types"),
    (b"[1, 2]", "not an object"),
])
def test_a_lock_file_this_scheme_did_not_write_is_taken_over_in_one_sentence(tmp_path, content, kind):
    path = tmp_path / "x.lock"
    path.write_bytes(content)
    said = []
    with Lock(path, "x", "train", say=said.append):
        assert read_holder(path).pid == os.getpid()
    assert said == ["took over the lock on x from nobody: an unreadable lock file (empty, cut short, or not written "
                    "by ibsr-nnunet)"], kind


def test_a_lock_path_that_is_a_directory_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "x.lock"
    path.mkdir()
    with pytest.raises(InputError, match=rf"^{path} is not a lock file \(a directory or another kind of file\); "
                                         r"remove it and run again\.$"):
        Lock(path, "x", "train").acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["x.lock"]  # no record file left beside it


def test_a_lock_in_a_folder_that_cannot_be_created_is_refused_in_one_sentence():
    with pytest.raises(InputError, match=r"^cannot write the lock /proc/x/.y.lock on y"):
        Lock(Path("/proc/x/.y.lock"), "y", "segment").acquire()


def test_verify_raises_lock_lost_in_process_once_the_file_is_deleted(tmp_path):
    path = tmp_path / "fold.lock"
    lock = Lock(path, "fold 0", "train", heartbeat=30).acquire()
    lock.verify()
    path.unlink()
    with pytest.raises(LockLost, match=rf"^lost the lock on fold 0: the lock file {path} was deleted; stopped"):
        lock.verify()
    lock.release()
    assert not path.exists()
