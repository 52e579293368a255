"""Our own run history: `<run folder>/runs.jsonl`, a start line and an end line per training run, appended atomically.

SLURM forgets a finished job after MinJobAge, so restarts, why each run ended, the work it redid and the GPU time it
took are recorded here by the run itself. Each line is one `os.write` to a file opened with O_APPEND, then fsync:
readers see whole lines only, and concurrent writers never interleave. A start line without an end line is a run
that died without a word (SIGKILL, out of memory, a lost node); the next run of the folder records it as `killed`.

Start line: event "start", run (id shared with the end line), start (UTC ISO time), host, pid, slurm_job
("12_3" for an array task), slurm_job_id, slurm_array_task, slurm_restart_count, device ("cuda" | "cpu"),
device_name (the GPU or CPU model), epoch_start, epochs_redone (finished epochs before this run that it repeats),
compile (nnU-Net's torch.compile, None for the baselines), log (nnU-Net's training log file of this run), command.
End line: event "end", run, end (UTC; None for `killed`), reason (END_REASONS), exit_code, epoch_end, seconds,
startup_seconds (from the run's start to its first finished epoch: loading, torch.compile, the epoch itself),
since_last_epoch_seconds (the unsaved part-epoch a `usr1`/`term` run leaves to be redone, and the save), stalled.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from .exitcodes import EXIT_LOCKED, EXIT_STALLED

RUNS_FILE = "runs.jsonl"
END_REASONS = ("finished", "usr1", "term", "locked", "interrupt", "crash", "killed")
STALL_FIX = "submit again with a longer --time or a smaller --signal-grace"


def runs_file(folder: Path) -> Path:
    return Path(folder) / RUNS_FILE


def utc(seconds: Optional[float]) -> Optional[str]:
    """time.time() as an ISO UTC time ('2026-11-30T21:22:52Z'); None stays None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: Optional[str]) -> Optional[float]:
    """An ISO UTC time, with or without fractions of a second, as time.time(); None when it is not one."""
    for form in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text or "", form).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    return None


def append_line(folder: Path, record: dict) -> None:
    """One JSON line appended atomically: one write to a file opened O_APPEND, then fsync."""
    data = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(runs_file(folder), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a full disk: the reader skips the cut line, the next run still records itself
            raise OSError(f"{runs_file(folder)}: wrote {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Run:
    """One run of the history: its start line and its end line (None while it runs, or when it died unrecorded)."""

    start: dict
    end: Optional[dict] = None

    @property
    def run_id(self) -> str:
        return self.start["run"]

    @property
    def reason(self) -> Optional[str]:
        return self.end["reason"] if self.end else None

    @property
    def epoch_start(self) -> Optional[int]:
        return self.start.get("epoch_start")

    @property
    def epoch_end(self) -> Optional[int]:
        return self.end.get("epoch_end") if self.end else None

    @property
    def began(self) -> Optional[float]:
        return parse_utc(self.start.get("start"))

    @property
    def seconds(self) -> Optional[float]:
        return self.end.get("seconds") if self.end else None

    @property
    def no_progress(self) -> bool:
        """Ended without finishing an epoch (known start and end epochs, equal)."""
        return self.epoch_start is not None and self.epoch_end is not None and self.epoch_end <= self.epoch_start


def read_runs(folder: Path) -> list[Run]:
    """The folder's runs in the order they started; lines that do not parse (cut by a full disk) are skipped."""
    path = runs_file(folder)
    try:
        lines = path.read_bytes().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    runs: dict[str, Run] = {}
    for line in lines:
        try:
            record = json.loads(line)
            run_id, event = record["run"], record["event"]
        except (ValueError, KeyError, TypeError):
            continue
        if event == "start" and run_id not in runs:
            runs[run_id] = Run(record)
        elif event == "end" and run_id in runs and runs[run_id].end is None:
            runs[run_id].end = record
    return list(runs.values())


def stalled(runs: list[Run]) -> bool:
    """The last two runs both ended by USR1 at the epoch they started from: a requeue would only loop."""
    return len(runs) >= 2 and all(r.reason == "usr1" and r.no_progress for r in runs[-2:])


def _slurm() -> dict:
    array, task, job = (os.environ.get(k) for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"))
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    return {"slurm_job": f"{array}_{task}" if array and task else job, "slurm_job_id": job,
            "slurm_array_task": int(task) if task and task.isdigit() else None,
            "slurm_restart_count": int(restarts) if restarts.isdigit() else 0,
            "slurm_node": os.environ.get("SLURMD_NODENAME")}


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo ('cpu' where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


@dataclass
class RunLog:
    """This run's entry in the folder's history. Create it when the run starts (under the folder's lock), call
    `begin` once the starting epoch and device are known, `epoch_finished` after each epoch, and `end` once
    (core/durable.py reads the reason from how the run left)."""

    folder: Path
    command: str
    started: float = field(default_factory=time.time)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    epoch: Optional[int] = None  # the epochs finished so far: set by `begin`, then by `epoch_finished`
    first_epoch_at: Optional[float] = None
    last_epoch_at: Optional[float] = None
    begun: bool = False
    ended: bool = False
    start_line: dict = field(default_factory=dict)

    def begin(self, *, epoch: Optional[int], device: Optional[str] = None, device_name: Optional[str] = None,
              reached: Optional[int] = None, **extra: Any) -> None:
        """Record earlier runs that died unrecorded as `killed`, then this run's start line. `reached`: the
        finished epochs the folder's own logs show (for the work a killed run did after its last checkpoint)."""
        history = read_runs(self.folder)
        for run in history:
            if run.end is None:
                append_line(self.folder, {"event": "end", "run": run.run_id, "end": None, "reason": "killed",
                                          "exit_code": None, "epoch_end": None, "seconds": None,
                                          "startup_seconds": None, "stalled": False, "recorded": utc(time.time())})
        known = [r.epoch_end for r in history if r.epoch_end is not None] + ([reached] if reached is not None else [])
        redone = max(0, max(known) - epoch) if known and epoch is not None else (0 if epoch is not None else None)
        self.start_line = {"event": "start", "run": self.run_id, "start": utc(self.started),
                           "host": socket.gethostname(), "pid": os.getpid(), **_slurm(), "device": device,
                           "device_name": device_name, "epoch_start": epoch, "epochs_redone": redone,
                           "command": self.command, **extra}
        append_line(self.folder, self.start_line)
        self.epoch, self.begun = epoch, True

    def epoch_finished(self, epochs_done: int) -> None:
        """An epoch ended: `epochs_done` are finished now (what a resume would start from)."""
        self.epoch, self.last_epoch_at = epochs_done, time.time()
        if self.first_epoch_at is None:
            self.first_epoch_at = self.last_epoch_at

    def end(self, reason: str, *, exit_code: Optional[int] = None) -> bool:
        """Append the end line; True when this run and the one before it both ended by USR1 without finishing an
        epoch (the caller then exits with EXIT_STALLED instead of asking for a requeue)."""
        if reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r}")
        if not self.begun:
            self.begin(epoch=None)
        now = time.time()
        line = {"event": "end", "run": self.run_id, "end": utc(now), "reason": reason, "exit_code": exit_code,
                "epoch_end": self.epoch, "seconds": round(now - self.started, 3),
                "startup_seconds": (None if self.first_epoch_at is None
                                    else round(self.first_epoch_at - self.started, 3)),
                "since_last_epoch_seconds": round(now - (self.last_epoch_at or self.started), 3), "stalled": False}
        if reason == "usr1":
            history = read_runs(self.folder)
            ids = [r.run_id for r in history]
            if self.run_id in ids:
                history[ids.index(self.run_id)].end = line
                line["stalled"] = stalled(history[:ids.index(self.run_id) + 1])
                if line["stalled"]:
                    line["exit_code"] = EXIT_STALLED
        append_line(self.folder, line)
        self.ended = True
        return line["stalled"]


def record_locked(folder: Path, command: str) -> None:
    """A run refused because another live writer holds the folder: a start and an end line, in a folder that
    exists only (nothing is created beside what another writer holds)."""
    if Path(folder).is_dir():
        log = RunLog(Path(folder), command)
        line = {"event": "start", "run": log.run_id, "start": utc(log.started), "host": socket.gethostname(),
                "pid": os.getpid(), **_slurm(), "device": None, "device_name": None, "epoch_start": None,
                "epochs_redone": None, "command": command}
        append_line(folder, line)  # no `killed` sweep: the other writer's run is open and alive
        log.begun = True
        log.end("locked", exit_code=EXIT_LOCKED)


def stall_message(epoch: Optional[int]) -> str:
    return (f"stalled: this run and the one before it were both stopped by the time-limit warning (SIGUSR1) at "
            f"epoch {epoch} without finishing an epoch, so a requeue would only loop; exiting with {EXIT_STALLED}: "
            f"{STALL_FIX}.")


def median(values: list[float]) -> Optional[float]:
    values = sorted(v for v in values if v is not None and not math.isnan(v))
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
