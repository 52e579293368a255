"""What each `submit` did, in `<workspace>/slurm/jobs.json`: written atomically after every sbatch."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.workspace import Workspace


def jobs_file(ws: Workspace) -> Path:
    return ws.slurm / "jobs.json"


def load_jobs(ws: Workspace) -> list[dict]:
    path = jobs_file(ws)
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["jobs"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is unreadable ({err}); move it away and run `ibsr-nnunet submit` again "
                         f"(check `squeue` for jobs it recorded first).") from None


def save_jobs(ws: Workspace, jobs: list[dict]) -> None:
    write_json(jobs_file(ws), {"jobs": jobs})
