"""Whole-file writes that a power cut or a kill cannot leave half done.

The data goes to a temporary file in the same directory, is fsynced, renamed over the target
(`os.replace` is atomic within one file system), and then the directory itself is fsynced so
the rename is on disk too. A crash at any step leaves either the old file or the new one;
at worst a stray `.NAME.tmp` beside it, which the next write reuses.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def temp_path(path: str | os.PathLike[str]) -> Path:
    """Where `write_atomic` stages the new contents of `path`."""
    target = Path(path)
    return target.with_name(f".{target.name}.tmp")


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` (file mode `mode`), creating its directory if needed.

    Raises OSError when any step fails; the old file is then left as it was. Safe to call
    from worker threads: writers of the same path take turns.
    """
    target = Path(path)
    tmp = temp_path(target)
    with _lock_for(os.fspath(target.absolute())):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # a stale temp file may carry another mode
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_dir(target.parent)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `directory` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
