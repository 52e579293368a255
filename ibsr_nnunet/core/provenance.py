"""Which dataset (and, for predictions, which weights) each result was made from: the conversion's fingerprint and
the weights' signature, recorded beside every artifact and checked before anything is reused, so that nothing made
from another dataset or from other weights is ever taken for current."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .atomic import fsync_dir, write_json
from .checksums import sha256
from .errors import InputError
from .jsonfile import read_json_or_none
from .manifest import read_manifest
from .workspace import Workspace

PROVENANCE_FILE = "ibsr_provenance.json"  # in every fold folder, baseline run and prediction set
KEY = "dataset_fingerprint"
WEIGHTS = "weights"  # in a prediction set's record (write_provenance(..., weights=...)): the files predicted with


def dataset_fingerprint(ws: Workspace) -> str:
    """The identity of the workspace's dataset: the fingerprint `convert` computed from every source file's
    checksum, the label mapping, the split and the preprocessing."""
    return read_manifest(ws).fingerprint


def short(fingerprint: Optional[str]) -> str:
    return fingerprint[:12] if fingerprint else "an unknown dataset (no provenance recorded)"


def write_provenance(folder: Path, fingerprint: str, **details) -> None:
    """Write `folder`/ibsr_provenance.json: this folder's contents are made from the dataset `fingerprint`."""
    write_json(Path(folder) / PROVENANCE_FILE, {KEY: fingerprint, **details,
                                                "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _read_record(folder: Path) -> dict:
    """`folder`'s record; {} when it has none or it is unreadable (then it was made from an unknown dataset)."""
    saved = read_json_or_none(Path(folder) / PROVENANCE_FILE)
    return saved if isinstance(saved, dict) else {}


def recorded(folder: Path) -> Optional[str]:
    """The fingerprint recorded in `folder`, or None when there is none (or it is unreadable)."""
    return _read_record(folder).get(KEY)


def _workspace_relative(ws: Workspace, path: Path) -> str:
    path, root = Path(path).resolve(), ws.root.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def weights_signature(ws: Workspace, paths: list[Path]) -> list[dict]:
    """Each weights file's identity: its path relative to the workspace, size, mtime_ns and the sha256 of its bytes."""
    signature = []
    for path in paths:
        stat = Path(path).stat()
        signature.append({"path": _workspace_relative(ws, path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "sha256": sha256(Path(path))})
    return signature


def recorded_weights(folder: Path) -> Optional[list[dict]]:
    """The weights signature recorded in `folder`, or None when it records none (or its record is unreadable)."""
    weights = _read_record(folder).get(WEIGHTS)
    return weights if isinstance(weights, list) else None


def weights_changed(ws: Workspace, signature: list[dict]) -> Optional[str]:
    """None while every weights file of `signature` holds the bytes it held; else which one changed, in words. A
    file of the same size and mtime is taken as unchanged without reading it; one only touched (same bytes) is too."""
    for entry in signature:
        path = ws.root / entry["path"]  # an absolute recorded path stays itself
        try:
            stat = path.stat()
        except OSError:
            return f"{entry['path']} is gone"
        if (stat.st_size, stat.st_mtime_ns) == (entry["size"], entry["mtime_ns"]):
            continue
        if stat.st_size != entry["size"] or sha256(path) != entry["sha256"]:
            return f"{entry['path']} changed at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stat.st_mtime))}"
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


def artifacts(ws: Workspace) -> dict[str, list[Path]]:
    """Every result folder made from the workspace's dataset, by kind: trained folds, baseline runs, prediction sets."""
    def folders(pattern_root: Path, pattern: str) -> list[Path]:
        return sorted(p for p in pattern_root.glob(pattern) if p.is_dir() and not p.name.startswith("."))

    return {"trained folds": folders(ws.results_dataset, "*/fold_*"), "baseline runs": folders(ws.baselines, "*"),
            "prediction sets": folders(ws.predictions, "*")}


def stale_artifacts(ws: Workspace, fingerprint: str) -> dict[str, list[Path]]:
    """The result folders, by kind, that were not made from the dataset `fingerprint`."""
    return {kind: [f for f in found if staleness(f, fingerprint)] for kind, found in artifacts(ws).items()}


def ensure_current(ws: Workspace, folder: Path, *, what: str, fingerprint: str, archive_stale: bool,
                   copies: Sequence[Path] = (), say: Callable[[str], None] = print) -> None:
    """Refuse a stale `folder` in one sentence, or, with --archive-stale, move it aside so the caller starts afresh;
    `copies` (files it needs that are shared with others, left in place) are archived beside it."""
    why = staleness(folder, fingerprint)
    if why is None:
        return
    if not archive_stale:
        raise InputError(f"{folder} ({what}) is stale: {why}; pass --archive-stale to move it to "
                         f"{ws.root / 'stale'}/<time>/ and start afresh (nothing is deleted).")
    say(f"archived the stale {what} ({why}) to {archive(ws, [folder], copies=copies)}")


def contradicts(folder: Path, fingerprint: str) -> Optional[str]:
    """Like `staleness`, but only for a folder whose record names another dataset: a folder without any record
    (predictions made elsewhere) is judged by its contents instead."""
    return staleness(folder, fingerprint) if recorded(folder) is not None else None


def archive(ws: Workspace, paths: Sequence[Path], *, copies: Sequence[Path] = ()) -> Path:
    """Move each path (inside the workspace) to <workspace>/stale/<timestamp>/<same relative path>, and copy there
    each of `copies` (files still used in place); delete nothing. Each call gets a folder of its own."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = ws.root / "stale" / stamp, 1
    while target.exists():  # two archives in one second: never one onto the other
        n += 1
        target = ws.root / "stale" / f"{stamp}-{n}"
    for path, move in [(p, True) for p in paths] + [(p, False) for p in copies]:
        path = Path(path).absolute()
        try:
            relative = path.relative_to(ws.root)
        except ValueError:
            raise InputError(f"{path} is outside the workspace {ws.root}: it cannot be archived there.") from None
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.rename(path, destination)  # same filesystem: a rename, never a half-moved copy
            fsync_dir(path.parent)
        else:
            shutil.copy2(path, destination)
    return target


def archive_stale_outputs(ws: Workspace, paths: Sequence[Path], *, what: str, why: str,
                          say: Callable[[str], None] = print) -> None:
    """Before a step overwrites outputs made from another dataset: move those of `paths` that exist to the archive."""
    found = [Path(p) for p in paths if Path(p).exists()]
    if found:
        say(f"archived {what} ({why}) to {archive(ws, found)} before replacing it")
