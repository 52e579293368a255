"""One writer per place: the lock file, its holder's identity, heartbeats, and when a lock is stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from ibsr_nnunet.core.exitcodes import EXIT_LOCKED, EXIT_REQUEUE
from ibsr_nnunet.core.locks import Holder, Lock, LockedError, process_start_time, read_holder, why_stale


def write_holder(path: Path, holder: Holder) -> None:
    path.write_text(json.dumps(asdict(holder)))


def dead_pid() -> int:
    """The PID of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_exit_codes_are_distinct():
    assert EXIT_LOCKED not in (0, 1, 2, EXIT_REQUEUE) and EXIT_LOCKED < 128


def test_acquire_writes_our_identity_and_release_removes_it(tmp_path):
    path = tmp_path / "fold.lock"
    with Lock(path, "fold 0", "train --fold 0"):
        holder = read_holder(path)
        assert (holder.pid, holder.start_time, holder.command) == (os.getpid(), process_start_time(os.getpid()),
                                                                   "train --fold 0")
    assert not path.exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "fold.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ibsr_nnunet.core.locks import Lock\n"
        f"with Lock({str(path)!r}, 'fold 0', 'train --fold 0'):\n"
        "    print('held', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as refused:
            Lock(path, "2d fold 0", "train").acquire()
        message = str(refused.value)
        assert f"PID {holder.pid} on {os.uname().nodename}" in message and str(path) in message
        assert refused.value.exit_code == EXIT_LOCKED
    finally:
        holder.kill()
        holder.wait()
    # its holder is gone now: the lock is taken over at once, with a line saying so
    said = []
    with Lock(path, "2d fold 0", "train", say=said.append):
        assert read_holder(path).pid == os.getpid()
    assert said and f"PID {holder.pid}" in said[0] and "is gone" in said[0]


def test_the_same_pid_with_another_start_time_is_a_new_process():
    me = Holder.me("x")
    assert why_stale(replace(me, start_time="1"), me) == f"PID {me.pid} now belongs to another process (the holder is gone)"
    assert why_stale(me, me) is None


def test_a_dead_holder_on_this_host_is_stale_at_once():
    me = Holder.me("x")
    pid = dead_pid()
    assert why_stale(replace(me, pid=pid, start_time="123"), me) == f"its holder PID {pid} is gone"


@pytest.mark.parametrize("age, heartbeat, stale", [(50, 10, False), (101, 10, True), (5, 0.4, True), (3, 0.4, False)])
def test_another_hosts_lock_is_stale_after_ten_missed_heartbeats(age, heartbeat, stale):
    me = Holder.me("x")
    other = replace(me, host="node7", boot_id="another-boot", pid=1, heartbeat=time.time() - age)
    reason = why_stale(other, me, heartbeat)
    assert (reason is not None) == stale
    if stale:
        assert reason.startswith(f"no heartbeat for {age} s")


@pytest.mark.parametrize("holder_restart, my_restart, stale", [(0, 1, True), (2, 3, True), (1, 1, False), (2, 1, False)])
def test_a_requeued_run_of_the_same_slurm_job_takes_over(holder_restart, my_restart, stale):
    me = replace(Holder.me("x"), slurm_job_id="77_0", slurm_restart_count=my_restart)
    other = replace(me, host="node7", boot_id="b", pid=1, slurm_restart_count=holder_restart)
    assert (why_stale(other, me) is not None) == stale
    assert why_stale(replace(other, slurm_job_id="78_0"), me) is None  # another job: not ours to take


def test_a_pre_seeded_live_holder_refuses_and_nothing_is_overwritten(tmp_path):
    path = tmp_path / "x.lock"
    live = replace(Holder.me("submit"), host="node7", boot_id="b", pid=4242, slurm_job_id="9", command="train")
    write_holder(path, live)
    with pytest.raises(LockedError, match="PID 4242 on node7, SLURM job 9"):
        Lock(path, "x", "train").acquire()
    assert read_holder(path) == live


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    path = tmp_path / "x.lock"
    with Lock(path, "x", "train", heartbeat=0.1):
        first = read_holder(path).heartbeat
        time.sleep(0.5)
        assert read_holder(path).heartbeat > first


def test_an_unreadable_lock_file_is_stale(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text('{"pid": 1, "ho')  # cut short by a crash
    said = []
    with Lock(path, "x", "train", say=said.append):
        pass
    assert said and "unreadable lock file" in said[0]
