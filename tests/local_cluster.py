"""Commands against the local SLURM cluster's workspaces: the CLI with wide output, status rows, a job's fields,
waiting."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import helpers
from ibsr_nnunet.core.workspace import Workspace


def cli(ws: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return helpers.cli(ws, *args, timeout=timeout, columns=250)


def copy_workspace(planned: Path, target: Path) -> Workspace:
    return helpers.copy_workspace(planned, target)


def status(ws: Workspace) -> dict:
    result = cli(ws.root, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def rows(ws: Workspace) -> dict[tuple[str, str, int | None], dict]:
    return {(r["kind"], r["name"], r["fold"]): r for r in status(ws)["jobs"]}


def job_state(job: str) -> dict[str, str]:
    line = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", line))


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
