"""Which dataset each result was made from: the conversion's fingerprint, recorded beside every artifact and checked
before anything is reused, so that nothing made from another dataset is ever taken for current."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from .atomic import fsync_dir, write_json
from .errors import InputError
from .workspace import Workspace

PROVENANCE_FILE = "ibsr_provenance.json"  # in every fold folder, baseline run and prediction set
KEY = "dataset_fingerprint"


def dataset_fingerprint(ws: Workspace) -> str:
    """The identity of the workspace's dataset: the fingerprint `convert` computed from every source file's
    checksum, the label mapping, the split and the preprocessing."""
    return str(ws.read_manifest()["fingerprint"])


def short(fingerprint: Optional[str]) -> str:
    return fingerprint[:12] if fingerprint else "an unknown dataset (no provenance recorded)"


def record(folder: Path, fingerprint: str, **details) -> None:
    """Write `folder`/ibsr_provenance.json: this folder's contents are made from the dataset `fingerprint`."""
    write_json(Path(folder) / PROVENANCE_FILE, {KEY: fingerprint, **details,
                                                "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")})


def recorded(folder: Path) -> Optional[str]:
    """The fingerprint recorded in `folder`, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / PROVENANCE_FILE).read_text()).get(KEY)
    except (OSError, ValueError, AttributeError):
        return None


def staleness(folder: Path, fingerprint: str) -> Optional[str]:
    """None when `folder` holds nothing, or was made from `fingerprint`; else what it was made from, in words."""
    folder = Path(folder)
    if not folder.exists() or not any(folder.iterdir()):
        return None
    made_from = recorded(folder)
    if made_from == fingerprint:
        return None
    return f"made from dataset {short(made_from)}, the workspace now holds {short(fingerprint)}"


def archive(ws: Workspace, paths: list[Path]) -> Path:
    """Move each path (inside the workspace) to <workspace>/stale/<timestamp>/<same relative path>; delete nothing."""
    target = ws.root / "stale" / time.strftime("%Y%m%d-%H%M%S")
    for path in paths:
        path = Path(path).absolute()
        try:
            relative = path.relative_to(ws.root)
        except ValueError:
            raise InputError(f"{path} is outside the workspace {ws.root}: it cannot be archived there.") from None
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, destination)  # same filesystem: a rename, never a half-moved copy
        fsync_dir(path.parent)
    return target
