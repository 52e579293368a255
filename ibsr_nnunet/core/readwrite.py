"""Many readers or one writer of a folder: the writer's lock beside it, one lock per reader in a folder beside it.

Both are `locks.Lock` files. Each side takes its own lock first, then looks for a live holder of the other side's and
backs off (LockedError, exit 73) when there is one: of a writer and a reader starting at one instant, at least one
sees the other, so a writer never rewrites what a reader is using. Two writers exclude each other by the lock itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from .locks import Holder, Lock, LockedError, current_holder, lock_path


def readers_folder(target: Path) -> Path:
    """The folder of the reader locks of `target`: hidden beside it, like its writer's lock."""
    return Path(target).with_name(f".{Path(target).name}.readers")


def live_reader(target: Path) -> Optional[tuple[Path, Holder]]:
    """A reader lock of `target` held by a live process (and that holder), or None when nobody reads it."""
    folder = readers_folder(target)
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else ():
        holder = current_holder(path)
        if holder is not None:
            return path, holder
    return None


@contextmanager
def writing(target: Path, what: str, command: str, *, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold `target` as its only writer; LockedError when another writer holds it or a live reader reads it."""
    with Lock(lock_path(target), what, command, say=say):
        reader = live_reader(target)
        if reader is not None:
            path, holder = reader
            raise LockedError(f"{target} is being read by {holder.describe()} (lock {path}); wait for it to finish "
                              f"or stop it, then run this again.", holder)
        yield


def refuse_while_written(target: Path) -> None:
    """LockedError when a live writer holds `target`."""
    writer = lock_path(target)
    holder = current_holder(writer)
    if holder is not None:
        raise LockedError(f"{target} is being written by {holder.describe()} (lock {writer}); wait for it to "
                          f"finish, then run this again.", holder)


@contextmanager
def reading(target: Path, reader: str, what: str, command: str, *,
            say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the reader lock `reader` of `target` (what: the reader, in words); LockedError when a live writer
    holds `target`, or another live process holds this reader lock."""
    with Lock(readers_folder(target) / f"{reader}.lock", what, command, say=say):
        refuse_while_written(target)
        yield
