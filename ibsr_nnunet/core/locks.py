"""One writer per place: a lock file beside each resource a command writes, portable to NFS and Lustre.

The lock is a file created with O_CREAT|O_EXCL (atomic on NFSv3+ and Lustre; `fcntl` locks are not reliable on
every NFS) that holds its owner's identity. Its holder refreshes the file's heartbeat every `heartbeat` seconds
from a daemon thread. A lock is stale, and is taken over (with a log line), when
- its heartbeat is older than 10 × `heartbeat` seconds, on any host (clocks of cluster nodes agree to seconds);
- on the same host (same boot id), its holder is gone: the PID is not running, or runs another process (its start
  time differs), since PIDs are reused;
- inside SLURM, it was taken under the same SLURM_JOB_ID with a lower SLURM_RESTART_COUNT: the requeued run of
  the same job.
Taking over renames the stale file to a unique name first (rename is atomic), so two takers cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import InputError
from .exitcodes import EXIT_LOCKED

HEARTBEAT_SECONDS = float(os.environ.get("IBSR_LOCK_HEARTBEAT", "30"))
STALE_AFTER_BEATS = 10


class LockedError(InputError):
    """Another live writer holds the lock; str() names it. Commands exit with EXIT_LOCKED."""

    exit_code = EXIT_LOCKED

    def __init__(self, message: str, holder: "Holder"):
        super().__init__(message)
        self.holder = holder


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name, which may hold spaces


@dataclass
class Holder:
    """Who holds a lock: enough to tell, from any process, whether it is still there."""

    pid: int
    host: str
    boot_id: str
    start_time: Optional[str]
    slurm_job_id: Optional[str]
    slurm_restart_count: int
    command: str
    heartbeat: float  # time.time() of the last refresh

    @classmethod
    def me(cls, command: str) -> "Holder":
        return cls(pid=os.getpid(), host=socket.gethostname(), boot_id=_boot_id(),
                   start_time=process_start_time(os.getpid()), slurm_job_id=_slurm_job_id(),
                   slurm_restart_count=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), command=command,
                   heartbeat=time.time())

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id} (restart {self.slurm_restart_count})" if self.slurm_job_id else ""
        return f"PID {self.pid} on {self.host}{job}, `{self.command}`"


def _slurm_job_id() -> Optional[str]:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def why_stale(holder: Holder, me: Holder, heartbeat: float = HEARTBEAT_SECONDS) -> Optional[str]:
    """Why a lock held by `holder` may be taken over by `me`, or None while its holder may still be writing."""
    age = time.time() - holder.heartbeat
    if age > STALE_AFTER_BEATS * heartbeat:
        return f"no heartbeat for {age:.0f} s (more than {STALE_AFTER_BEATS} × {heartbeat:g} s)"
    if holder.boot_id and holder.boot_id == me.boot_id and holder.host == me.host:
        start = process_start_time(holder.pid)
        if start is None:
            return f"its holder PID {holder.pid} is gone"
        if holder.start_time is not None and start != holder.start_time:
            return f"PID {holder.pid} now belongs to another process (the holder is gone)"
    if (holder.slurm_job_id and holder.slurm_job_id == me.slurm_job_id
            and holder.slurm_restart_count < me.slurm_restart_count):
        return (f"it was taken by run {holder.slurm_restart_count} of SLURM job {holder.slurm_job_id}, "
                f"this is its requeued run {me.slurm_restart_count}")
    return None


def read_holder(path: Path) -> Optional[Holder]:
    """The lock's holder; None when the file vanished. A file cut short by a crash reads as a long-dead holder."""
    try:
        data = json.loads(path.read_text())
        return Holder(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return Holder(pid=-1, host="?", boot_id="", start_time=None, slurm_job_id=None, slurm_restart_count=0,
                      command="unreadable lock file", heartbeat=0.0)


def current_holder(path: Path) -> Optional[Holder]:
    """The live holder of the lock file `path` (someone is writing what it guards), or None when it is free or
    its holder is gone."""
    holder = read_holder(Path(path))
    if holder is None or why_stale(holder, Holder.me("")) is not None:
        return None
    return holder


def lock_path(target: Path) -> Path:
    """The lock file of a folder or file: hidden beside it, so globs over the folder's siblings never see it."""
    return Path(target).with_name(f".{Path(target).name}.lock")


class Lock:
    """`with Lock(path, what, command):` — hold `path` while writing `what`; LockedError when someone else does."""

    def __init__(self, path: Path, what: str, command: str, *, heartbeat: float = HEARTBEAT_SECONDS,
                 say: Callable[[str], None] = print):
        self.path = Path(path)
        self.what = what
        self.heartbeat = heartbeat
        self.say = say
        self.me = Holder.me(command)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def acquire(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a lock can vanish or turn stale between our tries: try again a few times
            if self._create():
                self._start_heartbeat()
                return self
            holder = read_holder(self.path)
            if holder is None:
                continue
            reason = why_stale(holder, self.me, self.heartbeat)
            if reason is None:
                raise LockedError(
                    f"{self.what} is being written by {holder.describe()} (lock {self.path}); wait for it to "
                    f"finish or stop it; if it is certainly gone, delete {self.path}.", holder)
            self._take_over(holder, reason)
        raise LockedError(f"{self.what}: could not take the lock {self.path} after 5 tries; try again.",
                          read_holder(self.path) or self.me)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self.me), handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _take_over(self, holder: Holder, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another taker moved it first; we race for the new lock
        self.say(f"took over the lock on {self.what} from {holder.describe()}: {reason}")
        aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            holder = read_holder(self.path)
            if holder is None or (holder.pid, holder.host, holder.start_time) != (self.me.pid, self.me.host,
                                                                                  self.me.start_time):
                return  # taken over (we were thought dead): never overwrite the new holder's lock
            self.me.heartbeat = time.time()
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(self.me)))
            os.replace(tmp, self.path)  # readers see the old or the new heartbeat, never half a file

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = read_holder(self.path)
        if holder is not None and (holder.pid, holder.host) == (self.me.pid, self.me.host):
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
