"""One writer per place: a lock file beside each resource a command writes, mutually exclusive on local disks, NFS
and Lustre.

The scheme uses only operations that are atomic on all three (`fcntl` locks are not reliable on every NFS):
- **Taking a free lock.** The holder's record (JSON) is written and fsynced to a file of its own, then `link()`ed
  to the lock's path. `link` fails when the path exists, so exactly one of any number of racing processes wins,
  and nobody can ever see a lock whose record is incomplete. Over NFS a lost reply can make a successful `link`
  report an error, so success is read from the record file's link count (2), as open(2) recommends.
- **The heartbeat** is the lock file's own mtime, refreshed every `heartbeat` seconds by the holder through its
  open file descriptor: it touches the holder's own inode only, never whatever file is at the path now, so a holder
  that was taken over cannot overwrite its successor's lock.
- **Taking over a stale lock.** A takeover must replace exactly the file it judged. Takers first take a short-lived
  guard (`<lock>.takeover`, itself taken with `link`), then, holding it, check that the path still holds the judged
  file (same inode, same bytes) and that it is still stale, and `rename()` their own record over it (atomic: the
  path is never empty, so no newcomer can slip in). A second taker that judged the same file finds another inode
  there and judges again: the live new holder refuses it.
- **When a lock is stale.** On the same host (same boot id) a holder is judged by its process alone: the PID is
  not running, is a zombie, or runs another process (its start time differs; PIDs are reused). A live holder is
  never taken over there, whatever its heartbeat says: a stopped process (Ctrl-Z, `scontrol suspend`, a frozen
  cgroup) keeps its lock. Only for a holder on another host, whose process cannot be seen, is the heartbeat judged:
  stale after 10 missed beats (node clocks must agree to within minutes). Inside SLURM a lock taken under the same
  SLURM_JOB_ID with a lower SLURM_RESTART_COUNT belongs to the requeued job's earlier run. A lock file that cannot
  be parsed (empty, cut short, garbage, wrong types: never written by this scheme) is stale.
- **Losing a lock.** The heartbeat thread checks that the path still holds its holder's inode; when it does not (the
  file was deleted or taken over after a long pause on another host), it says so on stderr and marks the lock lost.
  Writers call `verify()` before each checkpoint: it raises `LockLost` (exit 73), so the old holder stops instead
  of writing on.

What remains: a holder on another host judged stale by its heartbeat that wakes and releases within the
microseconds between a taker's check and its rename could remove its successor's file. Heartbeats are 10 beats
(5 minutes by default) stale before that can start.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from stat import S_ISREG
from typing import Callable, Optional

from .atomic import FULL_DISK, no_space
from .errors import InputError, LockedError, LockLost

HEARTBEAT_SECONDS = float(os.environ.get("IBSR_LOCK_HEARTBEAT", "30"))
STALE_AFTER_BEATS = 10
GUARD_STALE_SECONDS = 30.0  # a takeover holds its guard for milliseconds: older than this, its taker died
ACQUIRE_SECONDS = 10.0  # how long acquire() waits for a busy takeover guard before giving up
ACQUIRE_TRIES = 20  # judge-and-retry rounds (a lock can vanish or turn stale between two looks)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None when it is gone or a
    zombie (it has ended, only its exit status waits to be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()  # fields after the command name, which may hold spaces
    if after_name[0] in ("Z", "X"):
        return None
    return after_name[19]


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
    heartbeat: float = 0.0  # time.time() of the last refresh: the lock file's mtime, not part of the record
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells two records of one PID apart

    @classmethod
    def me(cls, command: str) -> "Holder":
        return cls(pid=os.getpid(), host=socket.gethostname(), boot_id=_boot_id(),
                   start_time=process_start_time(os.getpid()), slurm_job_id=_slurm_job_id(),
                   slurm_restart_count=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), command=command,
                   heartbeat=time.time())

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id} (restart {self.slurm_restart_count})" if self.slurm_job_id else ""
        return f"PID {self.pid} on {self.host}{job}, `{self.command}`"

    def lock_file_bytes(self) -> bytes:
        """The lock file's bytes: everything but the heartbeat, which is the file's mtime."""
        data = asdict(self)
        del data["heartbeat"]
        return json.dumps(data).encode()


_TYPES = {"pid": int, "host": str, "boot_id": str, "start_time": (str, type(None)),
          "slurm_job_id": (str, type(None)), "slurm_restart_count": int, "command": str, "token": str}


def parse_holder(data: bytes, heartbeat: float) -> Optional[Holder]:
    """The holder a lock file's bytes name; None when they are not a record of this scheme."""
    try:
        record = json.loads(data)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    record.pop("heartbeat", None)  # lock files of older versions carry it; the heartbeat is the mtime
    record.setdefault("token", "")
    known = {f.name for f in fields(Holder)} - {"heartbeat"}
    if set(record) != known or any(not isinstance(record[k], t) or isinstance(record[k], bool)
                                   for k, t in _TYPES.items()):
        return None
    return Holder(**record, heartbeat=heartbeat)


def _slurm_job_id() -> Optional[str]:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def why_stale(holder: Holder, me: Holder, heartbeat: float = HEARTBEAT_SECONDS) -> Optional[str]:
    """Why a lock held by `holder` may be taken over by `me`, or None while its holder may still be writing."""
    if (holder.slurm_job_id and holder.slurm_job_id == me.slurm_job_id
            and holder.slurm_restart_count < me.slurm_restart_count):
        return (f"it was taken by run {holder.slurm_restart_count} of SLURM job {holder.slurm_job_id}, "
                f"this is its requeued run {me.slurm_restart_count}")
    if holder.boot_id and holder.boot_id == me.boot_id and holder.host == me.host:
        # the holder's process can be seen: it alone decides, a stopped (SIGSTOP) holder stays the holder
        start = process_start_time(holder.pid)
        if start is None:
            return f"its holder PID {holder.pid} is gone"
        if holder.start_time is not None and start != holder.start_time:
            return f"PID {holder.pid} now belongs to another process (the holder is gone)"
        return None
    age = time.time() - holder.heartbeat
    if age > STALE_AFTER_BEATS * heartbeat:
        return f"no heartbeat for {age:.0f} s (more than {STALE_AFTER_BEATS} × {heartbeat:g} s)"
    return None


@dataclass(frozen=True)
class _Seen:
    """One look at a lock file: its identity and bytes, and the holder they name (None: unreadable)."""

    inode: tuple[int, int]
    data: bytes
    holder: Optional[Holder]


def _look(path: Path) -> Optional[_Seen]:
    """What is at `path` now, read through one descriptor (identity, bytes and mtime of the same file); None when
    nothing is there. A directory, or a file that cannot be read, is refused in one sentence."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _not_a_lock(path, err) from None
    try:
        status = os.fstat(fd)
        if not S_ISREG(status.st_mode):
            raise _not_a_lock(path)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as err:
        raise _not_a_lock(path, err) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return _Seen((status.st_dev, status.st_ino), data, parse_holder(data, status.st_mtime))


def _not_a_lock(path: Path, err: Optional[OSError] = None) -> InputError:
    if err is None or err.errno == errno.EISDIR:
        return InputError(f"{path} is not a lock file (a directory or another kind of file); remove it and run "
                          f"again.")
    return InputError(f"{path}: cannot read this lock file ({err.strerror}); fix its permissions or remove it.")


_UNREADABLE = "an unreadable lock file (empty, cut short, or not written by ibsr-nnunet)"


def read_holder(path: Path) -> Optional[Holder]:
    """The lock's holder; None when there is no lock file. A file this scheme did not write reads as a holder that
    is long gone (command: "unreadable lock file")."""
    seen = _look(Path(path))
    if seen is None:
        return None
    return seen.holder or Holder(pid=-1, host="?", boot_id="", start_time=None, slurm_job_id=None,
                                 slurm_restart_count=0, command="unreadable lock file", heartbeat=0.0, token="")


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


def _no_space(err: OSError, path: Path, what: str) -> InputError:
    if err.errno in FULL_DISK:
        return no_space(path)
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return InputError(f"cannot write the lock {path} on {what} ({err.strerror}); run where the folder is "
                          f"writable.")
    return InputError(f"cannot write the lock {path} on {what}: {err.strerror or err}; check the folder and run "
                      f"again.")


def _link_holder_file(holder_file: Path, path: Path) -> bool:
    """`link` the record file to `path`: True when it is there now, False when `path` existed."""
    try:
        os.link(holder_file, path)
        return True
    except FileExistsError:
        return os.stat(holder_file).st_nlink == 2  # NFS: a retried link whose first try succeeded


class Lock:
    """`with Lock(path, what, command):` — hold `path` while writing `what`; LockedError when someone else does.

    `verify()` raises LockLost when the lock is no longer ours; writers call it before each checkpoint."""

    def __init__(self, path: Path, what: str, command: str, *, heartbeat: float = HEARTBEAT_SECONDS,
                 say: Callable[[str], None] = print):
        self.path = Path(path)
        self.what = what
        self.heartbeat = heartbeat
        self.say = say
        self.me = Holder.me(command)
        self.lost: Optional[str] = None  # why the lock is no longer ours, once the heartbeat saw it
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._fd: Optional[int] = None  # our record's file, kept open: the heartbeat touches it
        self._inode: Optional[tuple[int, int]] = None

    # ---- taking it ------------------------------------------------------------------------------------------
    def acquire(self) -> "Lock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _no_space(err, self.path, self.what) from None
        holder_file = self._write_holder_file(self.path.with_name(f".{self.path.name}.{self.me.token[:12]}.new"))
        try:
            self._acquire(holder_file)
        except OSError as err:
            self._close()
            raise _no_space(err, self.path, self.what) from None
        except BaseException:
            self._close()
            raise
        finally:
            holder_file.unlink(missing_ok=True)
        self._start_heartbeat()
        return self

    def _write_holder_file(self, holder_file: Path) -> Path:
        """Our record, complete and on disk, in a file of its own (nobody looks at it until it is linked)."""
        try:
            fd = os.open(holder_file, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except OSError as err:
            raise _no_space(err, self.path, self.what) from None
        try:
            os.write(fd, self.me.lock_file_bytes())
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            holder_file.unlink(missing_ok=True)
            raise _no_space(err, self.path, self.what) from None
        stat = os.fstat(fd)
        self._fd, self._inode = fd, (stat.st_dev, stat.st_ino)
        return holder_file

    def _acquire(self, holder_file: Path) -> None:
        deadline = time.monotonic() + ACQUIRE_SECONDS
        for _ in range(ACQUIRE_TRIES):
            if _link_holder_file(holder_file, self.path):
                return
            seen = _look(self.path)
            if seen is None:
                continue  # released between our link and our look: race for it again
            reason = self._why_stale(seen)
            if reason is None:
                holder = seen.holder
                raise LockedError(
                    f"{self.what} is being written by {holder.describe()} (lock {self.path}); wait for it to "
                    f"finish or stop it; if it is certainly gone, delete {self.path}.", holder)
            while not self._take_over(seen, reason, holder_file):
                if time.monotonic() > deadline:
                    raise LockedError(f"{self.what}: the lock {self.path} is being taken over by another process; "
                                      f"try again.", seen.holder)
                time.sleep(0.005 + 0.02 * (uuid.uuid4().int % 100) / 100)  # busy guard: back off a little
            if self._holds():
                return
        raise LockedError(f"{self.what}: could not take the lock {self.path} after {ACQUIRE_TRIES} tries; try again.",
                          read_holder(self.path))

    def _why_stale(self, seen: _Seen) -> Optional[str]:
        return _UNREADABLE if seen.holder is None else why_stale(seen.holder, self.me, self.heartbeat)

    def _take_over(self, judged: _Seen, reason: str, holder_file: Path) -> bool:
        """Replace the judged stale file by our record, under the takeover guard. False: the guard is busy (try
        again); True: done, or the path holds something else now (look again)."""
        guard = self.path.with_name(f"{self.path.name}.takeover")
        if not self._take_guard(guard):
            return False
        try:
            now = _look(self.path)
            if now is None or (now.inode, now.data) != (judged.inode, judged.data):
                return True  # taken or released meanwhile: not what we judged, so not ours to replace
            if self._why_stale(now) is None:
                return True  # it came back to life (a heartbeat from another host)
            aside = self.path.with_name(f".{self.path.name}.{self.me.token[:12]}.taking")
            os.link(holder_file, aside)
            os.rename(aside, self.path)  # atomic: the path holds the stale file, then ours, never nothing
        finally:
            guard.unlink(missing_ok=True)
        holder = judged.holder.describe() if judged.holder else "nobody"
        self.say(f"took over the lock on {self.what} from {holder}: {reason}")
        return True

    def _take_guard(self, guard: Path) -> bool:
        """The takeover guard, taken like a lock. One whose taker died is removed: it is held for milliseconds, so
        it is stale when its taker is gone on this host or it is older than GUARD_STALE_SECONDS."""
        holder_file = guard.with_name(f".{guard.name}.{self.me.token[:12]}")
        try:
            holder_file.write_bytes(self.me.lock_file_bytes())
            if _link_holder_file(holder_file, guard):
                return True
        except OSError as err:
            raise _no_space(err, self.path, self.what) from None
        finally:
            holder_file.unlink(missing_ok=True)
        seen = _look(guard)
        if seen is None or (seen.holder is not None
                            and why_stale(seen.holder, self.me, GUARD_STALE_SECONDS / STALE_AFTER_BEATS) is None):
            return False
        moved = guard.with_name(f".{guard.name}.{self.me.token[:12]}.dead")
        try:
            os.rename(guard, moved)
        except FileNotFoundError:
            return False
        if _look(moved).inode != seen.inode:
            _link_holder_file(moved, guard)  # we moved a live taker's new guard: put it back
        moved.unlink(missing_ok=True)
        return False

    # ---- holding it -----------------------------------------------------------------------------------------
    def _holds(self) -> bool:
        seen = _look(self.path)
        return seen is not None and seen.inode == self._inode

    def verify(self) -> None:
        """Raise LockLost when the lock is no longer ours; writers call this before each write they checkpoint."""
        if self.lost is None and self._fd is not None and not self._holds():
            self.lost = self._lost_reason()
        if self.lost is not None:
            raise LockLost(f"lost the lock on {self.what}: {self.lost}; stopped without writing more (another "
                           f"writer may be at work there: check `ibsr-nnunet status`, then run again).",
                           read_holder(self.path))

    def _lost_reason(self) -> str:
        try:
            holder = read_holder(self.path)
        except InputError as err:
            return str(err)
        if holder is None:
            return f"the lock file {self.path} was deleted"
        return f"{self.path} now names {holder.describe()}"

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if not self._holds():
                self.lost = self._lost_reason()
                print(f"lost the lock on {self.what}: {self.lost}; this process stops writing at its next "
                      f"checkpoint.", file=sys.stderr, flush=True)
                return
            try:
                os.utime(self._fd)  # our own inode's mtime: never the file of whoever holds the path now
            except OSError:
                pass  # a missed beat; ten in a row make the lock stale for other hosts only

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self._fd is not None and self._holds():
                self.path.unlink(missing_ok=True)
        except InputError:
            pass  # the path is something else now: not ours to remove
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
