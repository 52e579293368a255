"""The scans `segment` is given: NIfTI files and Analyze pairs found in files and folders, each once, each with its
own output name, and the hash of its bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ..core.errors import InputError

SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")


def stem(path: Path) -> str:
    """The file name without its (double) extension."""
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _extension(path: Path) -> str:
    return next((path.name[-len(s):] for s in SUFFIXES if path.name.lower().endswith(s)), path.suffix)


def collect_inputs(paths: list[Path], exclude: Optional[Path] = None) -> list[Path]:
    """NIfTI files and Analyze pairs named directly or found in folders (recursively, skipping `exclude`: the
    output folder), each once, in order."""
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES)
                            and not (skip is not None and p.resolve().is_relative_to(skip)))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path} does not exist; pass NIfTI files (.nii, .nii.gz), Analyze .hdr/.img, or folders.")
    unique, seen = [], set()
    for path in found:
        key = path.resolve().with_name(stem(path)) if path.name.lower().endswith((".hdr", ".img")) else path.resolve()
        if key not in seen:  # an Analyze .img and its .hdr are one scan
            seen.add(key)
            unique.append(path.with_suffix(".hdr") if path.name.lower().endswith(".img") else path)
    if not unique:
        raise InputError(f"no .nii, .nii.gz or .hdr/.img file in {', '.join(map(str, paths))}; point at the scans.")
    return unique


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """Each input's output name (without `_tissue.nii.gz` / `_qc.png`), unique for any set of inputs.

    The rule: the file name without its extension; inputs that share it get the folders that tell them apart (from
    their common folder, joined with `__`) in front; inputs in one folder that still share it (`s.nii` beside
    `s.nii.gz`) get their extension behind (`s_nii`, `s_nii_gz`).
    """
    names = {p: stem(p) for p in inputs}

    def clashing() -> list[list[Path]]:
        groups: dict[str, list[Path]] = {}
        for path, name in names.items():
            groups.setdefault(name, []).append(path)
        return [group for group in groups.values() if len(group) > 1]

    for group in clashing():
        root = Path(os.path.commonpath([str(p.absolute().parent) for p in group]))
        for path in group:
            folders = path.absolute().parent.relative_to(root).parts
            names[path] = "__".join([*folders, stem(path)])
    for group in clashing():
        for path in group:
            names[path] = f"{names[path]}_{_extension(path).lstrip('.').replace('.', '_')}"
    for group in clashing():  # the same file named twice under different paths: number them
        for index, path in enumerate(group[1:], start=2):
            names[path] = f"{names[path]}_{index}"
    return names


def input_signature(path: Path) -> str:
    """sha256 of the scan's bytes (both files of an Analyze pair)."""
    digest = hashlib.sha256()
    for part in ([path, path.with_suffix(".img")] if path.name.lower().endswith(".hdr") else [path]):
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
