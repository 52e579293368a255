"""Node-local data: one configuration's preprocessed data copied to local disk, and nnU-Net pointed there for one run.

nnU-Net reads its preprocessed cases at random, every iteration; on a shared filesystem (Lustre, GPFS, NFS) that
is slow and loads everyone's storage. The copy lives in `<scratch>/ibsr-nnunet-staged/<key>/` as nnU-Net's own
layout (`nnUNet_preprocessed/<dataset>/...`), holding only what training reads: the top-level files (plans,
dataset.json, splits), `gt_segmentations/` and the configuration's data folder. It is reused when a manifest of
the source's relative paths, sizes and modification times matches the one stored with it. A new copy is made in a
temporary folder and renamed into place: when two runs on one node stage at once, the loser of the rename reuses
the winner's copy. Results and checkpoints stay in the workspace: only `nnUNet_preprocessed` changes, and only
inside `staged_preprocessed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..core.errors import InputError
from ..core.jsonfile import read_json_or_none
from ..core.workspace import Workspace

MANIFEST = ".ibsr-staged.json"
SCRATCH_VARIABLES = ("SLURM_TMPDIR", "TMPDIR")


@dataclass
class Staged:
    root: Path  # what nnUNet_preprocessed points at for the run
    copied: bool  # False: an identical copy was there already
    files: int
    bytes: int
    seconds: float


def scratch_folder(local_scratch: Optional[Path] = None) -> Path:
    """--local-scratch, else $SLURM_TMPDIR, else $TMPDIR; refused in one sentence when none is given."""
    if local_scratch:
        return Path(local_scratch)
    for variable in SCRATCH_VARIABLES:
        if os.environ.get(variable):
            return Path(os.environ[variable])
    raise InputError("--stage-data needs node-local disk, but neither $SLURM_TMPDIR nor $TMPDIR is set; pass "
                     "--local-scratch DIR with a folder on the node's own disk.")


def source_files(ws: Workspace, data_identifier: str) -> list[Path]:
    """What training one configuration reads from the preprocessed dataset, relative to it, sorted."""
    base = ws.preprocessed_dataset
    files = [p for p in base.iterdir() if p.is_file()]
    for folder in ("gt_segmentations", data_identifier):
        if (base / folder).is_dir():
            files += [p for p in (base / folder).rglob("*") if p.is_file()]
    return sorted(p.relative_to(base) for p in files)


def manifest(base: Path, files: list[Path]) -> list[list]:
    """[relative path, size, mtime in ns] of each file: equal manifests, identical copies (copy2 keeps mtimes)."""
    return [[str(f), (base / f).stat().st_size, (base / f).stat().st_mtime_ns] for f in files]


def _matches(copy: Path, expected: list[list]) -> bool:
    """The staged copy holds exactly these files, with these sizes (its own stored manifest agrees)."""
    if read_json_or_none(copy / MANIFEST) != expected:
        return False
    try:
        dataset = next((p for p in (copy / "nnUNet_preprocessed").iterdir() if p.is_dir()), None)
        return dataset is not None and all((dataset / name).stat().st_size == size for name, size, _ in expected)
    except OSError:  # a file of the copy is gone: copy afresh
        return False


def stage(ws: Workspace, data_identifier: str, *, local_scratch: Optional[Path] = None) -> Staged:
    """Copy (or reuse) the configuration's preprocessed data on node-local disk; nnU-Net's preprocessed root there."""
    started = time.perf_counter()
    base = ws.preprocessed_dataset
    files = source_files(ws, data_identifier)
    expected = manifest(base, files)
    size = sum(entry[1] for entry in expected)
    key = hashlib.sha256(f"{base.resolve()}\0{data_identifier}".encode()).hexdigest()[:16]
    folder = scratch_folder(local_scratch) / "ibsr-nnunet-staged"
    target = folder / f"{ws.dataset_name}-{data_identifier}-{key}"
    root = target / "nnUNet_preprocessed"
    if _matches(target, expected):
        return Staged(root, False, len(files), size, time.perf_counter() - started)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise InputError(f"--stage-data: {folder} cannot be written ({err.strerror or err}); pass --local-scratch "
                         f"with a folder on the node's own disk.") from None
    if free < size * 1.05:
        raise InputError(f"--stage-data: {folder} has {free / 1e9:.1f} GB free, the data needs {size / 1e9:.1f} GB; "
                         f"pass --local-scratch with a larger node-local folder, or leave --stage-data out.")
    temporary = folder / f".{target.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        for name in files:
            (temporary / "nnUNet_preprocessed" / ws.dataset_name / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / name, temporary / "nnUNet_preprocessed" / ws.dataset_name / name)
        (temporary / MANIFEST).write_text(json.dumps(expected))
        _publish(temporary, target, expected)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return Staged(root, True, len(files), size, time.perf_counter() - started)


def _publish(temporary: Path, target: Path, expected: list[list]) -> None:
    """Rename the finished copy into place; an identical copy already there (another run won) is kept."""
    for _ in range(3):
        try:
            os.rename(temporary, target)
            return
        except OSError:  # the target exists (ENOTEMPTY/EEXIST): another run's copy, or an outdated one
            if _matches(target, expected):
                return  # the winner's copy: ours is removed by the caller
            aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, aside)  # outdated: moved aside (atomic), then removed
            shutil.rmtree(aside, ignore_errors=True)
    raise InputError(f"--stage-data: could not put the staged copy in place at {target}; try again, or leave "
                     f"--stage-data out.")


@contextlib.contextmanager
def staged_preprocessed(ws: Workspace, data_identifier: str, *, enabled: bool, local_scratch: Optional[Path] = None,
                        say: Callable[[str], None] = print) -> Iterator[Optional[Staged]]:
    """Within: nnUNet_preprocessed points at the node-local copy (when `enabled`); restored afterwards."""
    if not enabled:
        yield None
        return
    staged = stage(ws, data_identifier, local_scratch=local_scratch)
    what = (f"copied {staged.files} files, {staged.bytes / 1e6:.1f} MB, in {staged.seconds:.1f} s" if staged.copied
            else f"an identical copy was there ({staged.files} files, {staged.bytes / 1e6:.1f} MB; checked in "
                 f"{staged.seconds:.1f} s)")
    say(f"staged the preprocessed data ({data_identifier}) on node-local disk at {staged.root}: {what}")
    previous = os.environ.get("nnUNet_preprocessed")
    os.environ["nnUNet_preprocessed"] = str(staged.root)
    try:
        yield staged
    finally:
        if previous is None:
            os.environ.pop("nnUNet_preprocessed", None)
        else:
            os.environ["nnUNet_preprocessed"] = previous
