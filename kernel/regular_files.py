"""Reading a file that someone else may have put in the run directory.

A run directory is not a trusted place: a FIFO named ``freeze.json`` (or named as the replay
recipe) would block whoever opens it until a writer shows up, a device would stream forever.
``read_regular`` opens without blocking, reads only regular files and at most ``limit``
bytes, and says what it found instead.
"""

from __future__ import annotations

import os
import stat

from kernel.errors import RunDirError

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def open_regular(path: str | os.PathLike[str]) -> int:
    """An open, non-blocking descriptor of the regular file ``path`` (symlinks followed).

    A device is refused before it is opened, and a FIFO swapped in after the check opens at
    once instead of hanging; the caller closes the descriptor.

    Raises:
        FileNotFoundError: when ``path`` does not exist (callers decide what that means).
        RunDirError: for anything but a regular file, or a file that cannot be opened.
    """
    try:
        _check_kind(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunDirError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    try:
        _check_kind(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    Never blocks on a FIFO and never reads from a device.

    Example:
        >>> read_regular("/dev/null", limit=10)
        Traceback (most recent call last):
        ...
        kernel.errors.RunDirError: /dev/null must be a regular file, got a character device

    Raises:
        FileNotFoundError: when ``path`` does not exist (callers decide what that means).
        RunDirError: for anything but a regular file, a file over ``limit`` bytes, or a file
            that cannot be read.
    """
    fd = open_regular(path)
    try:
        _check_size(path, os.fstat(fd).st_size, limit)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise RunDirError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:  # it grew while being read
        raise RunDirError(f"{os.fspath(path)} must be at most {limit} bytes, got more")
    return b"".join(chunks)


def _check_kind(path: str | os.PathLike[str], st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise RunDirError(f"{os.fspath(path)} must be a regular file, got {kind}")


def _check_size(path: str | os.PathLike[str], size: int, limit: int) -> None:
    if size > limit:
        raise RunDirError(f"{os.fspath(path)} must be at most {limit} bytes, got {size}")
