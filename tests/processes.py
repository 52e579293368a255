"""Real processes for the tests: descendants from /proc, liveness (a zombie is gone), polling, and the CLI started
in the background."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from helpers import CLI


def children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc: no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(poll)
    return check()


def start(ws: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--workspace", str(ws), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "200", **(env or {})})
