"""The converted dataset's files as `convert` wrote them: each one's checksum, size and time, recorded once in the
manifest, and what has changed since (judged by size and time first; a file is hashed only when those differ)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from .manifest import MANIFEST_FILE, Manifest, read_manifest
from .vocabulary import SPLITS_FILE
from .workspace import Workspace

NOT_RECORDED = MANIFEST_FILE  # the manifest cannot hold its own checksum


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """What the manifest keeps of one written file: its checksum, and the size and time that let a check skip it."""
    stat = Path(path).stat()
    return {"sha256": sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def dataset_files(dataset: Path) -> list[str]:
    """Every file of a converted dataset folder (paths inside it), hidden files and the manifest excepted."""
    return sorted(str(p.relative_to(dataset)) for p in Path(dataset).rglob("*")
                  if p.is_file() and p.name != NOT_RECORDED and not any(
                      part.startswith(".") for part in p.relative_to(dataset).parts))


def current_sha256(path: Path, record: Optional[dict]) -> Optional[str]:
    """The checksum of `path` now (None when it is gone): the recorded one while its size and time are as recorded."""
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return None
    if record and stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns"):
        return record["sha256"]
    return sha256(path)


def changes(ws: Workspace, manifest: Optional[Manifest] = None) -> list[str]:
    """What differs in the workspace's converted dataset from what `convert` wrote, one phrase per file (none: intact):
    changed, missing or added files of the raw dataset, and nnU-Net's copy of the split in the preprocessed folder."""
    files = (read_manifest(ws) if manifest is None else manifest).files
    if files is None:
        return [f"{ws.manifest} records no checksums of the dataset's files (converted by an older ibsr-nnunet)"]
    found = []
    for name, record in sorted(files.items()):
        now = current_sha256(ws.raw_dataset / name, record)
        if now is None:
            found.append(f"{name} is missing")
        elif now != record["sha256"]:
            found.append(f"{name} changed since convert wrote it")
    found += [f"{name} was added after convert" for name in dataset_files(ws.raw_dataset) if name not in files]
    splits, copy = files.get(SPLITS_FILE), ws.preprocessed_dataset / SPLITS_FILE
    if splits and copy.is_file() and sha256(copy) != splits["sha256"]:
        found.append(f"{copy} differs from the dataset's {SPLITS_FILE}")
    return found


def reference_sha256(ws: Workspace, references: dict[str, Path],
                     manifest: Optional[Manifest] = None) -> dict[str, str]:
    """case -> checksum of its reference label file now (cheap while the file is as `convert` recorded it)."""
    files = (read_manifest(ws) if manifest is None else manifest).files or {}
    found = {}
    for case, path in references.items():
        try:
            name = str(Path(path).relative_to(ws.raw_dataset))
        except ValueError:
            name = ""
        found[case] = current_sha256(path, files.get(name)) or ""
    return found
