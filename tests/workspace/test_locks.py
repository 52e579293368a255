"""core.locks with real processes: holders in child processes, zombies and dead holders, six processes racing at
one instant, a stopped or taken-over holder, a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import write_holder
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED
from ibsr_nnunet.core.locks import (
    Holder,
    Lock,
    LockedError,
    current_holder,
    process_start_time,
    read_holder,
    why_stale,
)
from lock_races import STATES, dead_pid, race


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


def test_a_dead_holder_on_this_host_is_stale_at_once():
    me = Holder.me("x")
    pid = dead_pid()
    assert why_stale(replace(me, pid=pid, start_time="123"), me) == f"its holder PID {pid} is gone"


def test_a_zombie_holder_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)  # exited, not yet reaped
    try:
        assert process_start_time(child.pid) is None
    finally:
        child.wait()


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
