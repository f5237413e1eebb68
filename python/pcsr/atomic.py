"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename it over.

A failure (bad input discovered late, a full disk, Ctrl-C) never leaves a partial file at
the target path, and the temporary file is removed. A target that exists and is not a
regular file (a symlink, a device such as /dev/null, a folder) is never replaced:
``os.replace`` would swap the link or the device node itself for a regular file.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class TargetError(OSError):
    """A target path that must not be written (not a regular file, or exists when it must not)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_target(path: str | os.PathLike, overwrite: bool = True) -> None:
    """Raise :class:`TargetError` unless ``path`` is absent, or (``overwrite``) a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise TargetError(f"{path} is a symbolic link; refusing to replace it")
    if stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{path} is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise TargetError(f"{path} exists and is not a regular file (a device, socket or pipe); refusing to replace it")
    if not overwrite:
        raise TargetError(f"{path} exists")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform or filesystem allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary path in ``path``'s folder; when the block succeeds, the file is
    fsynced and renamed to ``path``. With ``overwrite=False`` an existing ``path`` is kept
    and :class:`TargetError` raised (also when it appeared while the block ran)."""
    path = Path(path)
    check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        try:  # an existing file keeps its permissions; a new one gets the usual ones
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()  # mkstemp makes 0600
        os.chmod(tmp, mode)
        check_target(path, overwrite)  # again: the block may have run for minutes
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_no_clobber(tmp: str, path: Path) -> None:
    """Rename that fails if ``path`` exists: a hard link cannot replace a file."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise TargetError(f"{path} exists") from None
    except OSError:  # a filesystem without hard links: check, then rename
        check_target(path, overwrite=False)
        os.replace(tmp, path)
