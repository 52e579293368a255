"""One writer per place: the lock file, its holder's identity, heartbeats, when a lock is stale, races of many
processes at one instant, a stopped holder, a lost lock, and lock files that are not locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED, EXIT_REQUEUE
from ibsr_nnunet.core.locks import (
    Holder,
    Lock,
    LockedError,
    LockLost,
    current_holder,
    process_start_time,
    read_holder,
    why_stale,
)
from lock_races import STATES, dead_pid, race


def write_holder(path: Path, holder: Holder) -> None:
    """A lock file as another process leaves it; its mtime is the holder's heartbeat."""
    path.write_bytes(holder.record())
    os.utime(path, (holder.heartbeat, holder.heartbeat))


def hold_in_child(path: Path, heartbeat: float = 30.0) -> subprocess.Popen:
    """A process that takes the lock, says "held", verifies it once a second and stops on the first failure."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ibsr_nnunet.core.locks import Lock, LockLost\n"
        f"lock = Lock({str(path)!r}, 'fold 0', 'train --fold 0', heartbeat={heartbeat}).acquire()\n"
        "print('held', flush=True)\n"
        "try:\n"
        "    for _ in range(60):\n"
        "        time.sleep(0.2); lock.verify()\n"
        "except LockLost as lost:\n"
        "    print(lost, file=sys.stderr, flush=True); sys.exit(lost.exit_code)\n"
        "lock.release()")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


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


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "fold.lock"
    holder = hold_in_child(path)
    try:
        with pytest.raises(LockedError) as refused:
            Lock(path, "2d fold 0", "train").acquire()
        message = str(refused.value)
        assert f"PID {holder.pid} on {os.uname().nodename}" in message and str(path) in message
        assert refused.value.exit_code == EXIT_LOCKED
        assert current_holder(path).pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert current_holder(path) is None
    # its holder is gone now: the lock is taken over at once, with a line saying so
    said = []
    with Lock(path, "2d fold 0", "train", say=said.append):
        assert read_holder(path).pid == os.getpid()
    assert said and f"PID {holder.pid}" in said[0] and "is gone" in said[0]


def test_the_same_pid_with_another_start_time_is_a_new_process():
    me = Holder.me("x")
    assert why_stale(replace(me, start_time="1"), me) == (
        f"PID {me.pid} now belongs to another process (the holder is gone)")
    assert why_stale(me, me) is None


def test_a_dead_holder_on_this_host_is_stale_at_once():
    me = Holder.me("x")
    pid = dead_pid()
    assert why_stale(replace(me, pid=pid, start_time="123"), me) == f"its holder PID {pid} is gone"


def test_a_live_holder_on_this_host_is_never_stale_whatever_its_heartbeat():
    me = Holder.me("x")
    assert why_stale(replace(me, heartbeat=time.time() - 10 ** 6), me, heartbeat=0.1) is None


def test_a_zombie_holder_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)  # exited, not yet reaped
    try:
        assert process_start_time(child.pid) is None
    finally:
        child.wait()


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


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only), filled up by the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_gives_one_sentence_and_leaves_no_lock_file(tiny_disk):
    filler = tiny_disk / "filler"
    with pytest.raises(OSError):
        with open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    with pytest.raises(InputError, match=rf"^no space left on {tiny_disk} while writing {tiny_disk}/.out.lock; free "
                                         r"space there, or write somewhere else\.$"):
        Lock(tiny_disk / ".out.lock", "the output", "segment").acquire()
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("state", STATES)
def test_six_processes_at_one_instant_never_hold_the_lock_together(tmp_path, state):
    """The race harness: 20 trials of 6 processes released by one barrier, each holding what it won for 50 ms."""
    found = race(tmp_path, state, processes=6, trials=20, hold=0.05)
    assert found["errors"] == []
    assert (found["worst"], found["bad_trials"], found["clashes"]) == (1, 0, 0), found


def test_a_stopped_holder_keeps_its_lock_and_the_second_writer_is_refused(tmp_path):
    """SIGSTOP (Ctrl-Z, `scontrol suspend`) for 20 missed heartbeats: the holder is alive, so it keeps the lock;
    after SIGCONT it still holds it and finishes."""
    path = tmp_path / "fold.lock"
    holder = hold_in_child(path, heartbeat=0.1)
    try:
        holder.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        with pytest.raises(LockedError, match=f"is being written by PID {holder.pid} on"):
            Lock(path, "fold 0", "train", heartbeat=0.1).acquire()
        probe = subprocess.run([sys.executable, "-c", (
            "import sys; from ibsr_nnunet.core.locks import Lock, LockedError\n"
            "try:\n"
            f"    Lock({str(path)!r}, 'fold 0', 'train', heartbeat=0.1).acquire()\n"
            "except LockedError as e:\n"
            "    print(e); sys.exit(e.exit_code)")], capture_output=True, text=True)
        assert probe.returncode == EXIT_LOCKED and f"PID {holder.pid}" in probe.stdout
        holder.send_signal(signal.SIGCONT)
        _, err = holder.communicate(timeout=30)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
    assert not path.exists()


def test_a_holder_that_is_taken_over_stops_at_its_next_check_with_exit_73(tmp_path):
    """Another host took the lock over while this holder was paused there (its heartbeat went stale): the holder's
    heartbeat sees a lock that is not its own, it stops at its next verify() with one sentence, exit 73, and it
    never removes the new holder's lock."""
    path = tmp_path / "fold.lock"
    holder = hold_in_child(path, heartbeat=0.1)
    try:
        other = replace(Holder.me("train"), host="node7", boot_id="another-boot", pid=4242, heartbeat=time.time())
        replacement = tmp_path / "replacement"
        write_holder(replacement, other)
        os.rename(replacement, path)  # the taker's atomic rename over the judged file
        _, err = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == EXIT_LOCKED, err
    assert f"lost the lock on fold 0: {path} now names PID 4242 on node7" in " ".join(err.split())
    assert read_holder(path).token == other.token


def test_verify_raises_lock_lost_in_process_once_the_file_is_deleted(tmp_path):
    path = tmp_path / "fold.lock"
    lock = Lock(path, "fold 0", "train", heartbeat=30).acquire()
    lock.verify()
    path.unlink()
    with pytest.raises(LockLost, match=rf"^lost the lock on fold 0: the lock file {path} was deleted; stopped"):
        lock.verify()
    lock.release()
    assert not path.exists()
