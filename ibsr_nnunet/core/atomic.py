"""Atomic writes: a temporary file beside the target, fsync, then rename — readers see old or new, never half."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(InputError):
    """The disk (or the user's quota) filled up while a file was written."""


def no_space(target: str | os.PathLike) -> NoSpaceError:
    """The one sentence for a full disk met while writing `target`."""
    target = Path(target)
    return NoSpaceError(f"no space left on {mount_point(target)} while writing {target}; free space there, or "
                        f"write somewhere else.")


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds (or would hold) `path`."""
    path = path.absolute()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename it onto `target`. A full disk is a
    NoSpaceError naming `target`, and leaves nothing behind."""
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: results must stay readable by the user's group
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except OSError as err:
        if err.errno in FULL_DISK:
            raise no_space(target) from err
        raise
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def swap_in(build: Path, target: Path) -> None:
    """Replace folder `target` by the finished `build` with renames only: readers see the old or the new, never a mix.

    An old `target` is moved aside first and deleted after.
    """
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    os.rename(build, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")
