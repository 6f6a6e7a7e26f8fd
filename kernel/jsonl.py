"""Append-only JSON-lines files and atomically replaced JSON documents.

These are the only ways the kernel and its peers touch the run directory:

* ``append_line`` writes one complete line with a single ``write`` under an exclusive
  ``flock``, so concurrent appenders never interleave bytes within a line. If an earlier
  writer died mid-line, the torn fragment is closed with a newline first so it cannot
  swallow the new line.
* ``JsonlTail`` reads only what was appended since it last looked (a byte offset), and
  never consumes a torn last line: it is returned once it is complete.
* ``write_json_atomic`` writes a temp file and renames it over the target.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

from kernel.rotation import rotated_paths
from kernel.untrusted import read_valid

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def append_line(path: str | os.PathLike[str], line: str) -> int:
    """Append ``line`` (without its newline) as one line; return the byte offset it starts at.

    Raises:
        OSError: when the line could not be written whole (a full disk, a file size limit).
            Whatever part of it reached the file is cut off again, so no fragment is left to
            merge with the next line.
    """
    data = line.rstrip("\n").encode("utf-8")
    if b"\n" in data:
        raise ValueError("a JSON line must not contain a newline")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            end = size = os.lseek(fd, 0, os.SEEK_END)
            if end > 0 and not _ends_with_newline(path, end):
                data = b"\n" + data
                end += 1
            _write_all(fd, data + b"\n", size)
            return end
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, start: int) -> None:
    """Write ``data`` at the end of ``fd`` (which was ``start`` bytes long) or nothing."""
    written = 0
    try:
        while written < len(data):
            n = os.write(fd, data[written:])
            if n <= 0:
                raise OSError(errno.ENOSPC, "no byte could be written")
            written += n
    except OSError:
        if written:
            try:
                os.ftruncate(fd, start)
            except OSError:
                logger.exception("could not cut off a partly written line")
        raise


def _ends_with_newline(path: str | os.PathLike[str], size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def append_json(path: str | os.PathLike[str], obj: Any) -> int:
    """Append one JSON document as a line; return the byte offset it starts at."""
    return append_line(path, json.dumps(obj, separators=(",", ":"), allow_nan=False))


def read_models(path: str | os.PathLike[str], model: type[M]) -> list[M]:
    """Every line of ``path`` that validates as ``model``, oldest first; an empty list when
    the file does not exist. A foreign line is skipped and reported once with its line
    number (``kernel.untrusted.read_valid``); a torn last line is skipped until complete."""
    return [found for _, found in read_valid(path, model)]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON; readers see the old or the new file, never half."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False), encoding="utf-8")
    os.replace(tmp, target)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """Return the parsed document, or ``None`` when the file does not exist."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class JsonlTail:
    """Incremental reader of an append-only JSON-lines file.

    ``changed()`` is a single ``stat``: callers on a hot path use it to skip reading when
    nothing was appended. ``read_new()`` returns ``(offset, text)`` for each complete new
    line, where ``offset`` is the byte position the line starts at.

    A file that was not only appended to is read again from its start (``resets`` counts
    how often): it shrank below the offset, it was replaced (a new inode), or the last line
    read is no longer where it was (the file was truncated and written again). An offset
    then names a place in the new file, so a reader that remembers lines by offset must also
    compare their content.

    A file that was rotated (``kernel.rotation``: renamed to ``<stem>.<n><suffix>``, a new
    file started) is not read again: the rotated file is found by its inode and finished
    from the offset, the files rotated after it are read whole, then the new file from its
    start. Lines from a rotated file carry their offset in that file. Pass ``inode`` (the
    ``inode`` after an earlier read) with ``offset`` so that a new reader notices a rotation
    since then. With ``keep_blank`` whitespace-only lines are returned too (the
    kernel answers every line of ``commands.jsonl``); otherwise they are skipped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        keep_blank: bool = False,
        inode: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.keep_blank = keep_blank
        self.resets = 0
        self.rotations = 0
        """How many rotations this reader followed."""
        self._seen: tuple[int, int, int] | None = None if inode is None else (-1, inode, -1)
        """Size, inode and modification time at the last read."""
        self._last_line = b""
        """The last line read, with its newline: it must still end at ``offset``."""

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_size, st.st_ino, st.st_mtime_ns) != self._seen

    @property
    def inode(self) -> int | None:
        """The inode of the file at the last read (None before one)."""
        return None if self._seen is None else self._seen[1]

    def read_new(self) -> list[tuple[int, str]]:
        earlier: list[tuple[int, str]] | None = []
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                old, self._seen = self._seen, (st.st_size, st.st_ino, st.st_mtime_ns)
                if broken := self._discontinuity(f, st, old):
                    earlier = self._finish_rotated(None if old is None else old[1], st.st_ino)
                    if earlier is None:
                        self._reset(broken)
                f.seek(self.offset)
                chunk = f.read(st.st_size - self.offset)
        except FileNotFoundError:
            return []
        return (earlier or []) + self._split(chunk)

    def _discontinuity(
        self, f: BinaryIO, st: os.stat_result, old: tuple[int, int, int] | None
    ) -> str | None:
        """How the file is no longer the one read up to ``offset`` (None: it is). An inode
        reused by a new file after a rotation deleted the old one reads as written again."""
        if old is not None and st.st_ino != old[1]:
            return "was replaced"
        if st.st_size < self.offset:
            return f"shrank to {st.st_size} bytes"
        back = len(self._last_line)
        f.seek(self.offset - back)
        return None if f.read(back) == self._last_line else "was written again"

    def _finish_rotated(self, old: int | None, current: int) -> list[tuple[int, str]] | None:
        """The lines left in the rotated files since inode ``old`` was read, up to inode
        ``current`` (rotated again meanwhile, it is read as the current file); None when
        nothing was rotated. The offset is then 0, for the current file."""
        files = [f for f in (_open(p) for p in rotated_paths(self.path)) if f is not None]
        opened = list(files)
        try:
            inodes = [os.fstat(f.fileno()).st_ino for f in opened]
            if current in inodes:
                del opened[inodes.index(current) :], inodes[inodes.index(current) :]
            if not opened:
                return None
            if old in inodes and self._continues(opened[inodes.index(old)]):
                opened = opened[inodes.index(old) :]
            else:  # gone, or its inode reused by a later file
                logger.warning(
                    "%s was rotated more often than %d files are kept since it was read; "
                    "the lines between are lost",
                    self.path,
                    len(opened),
                )
                self.offset, self._last_line = 0, b""
            lines = []
            for f in opened:
                f.seek(self.offset)
                lines += self._split(f.read())
                self.offset, self._last_line = 0, b""
            self.rotations += 1
            return lines
        finally:
            for f in files:
                f.close()

    def _continues(self, f: BinaryIO) -> bool:
        """Whether ``f`` holds the last line read (at least a line end) just before ``offset``."""
        if not self.offset:
            return True
        expect = self._last_line or b"\n"
        if self.offset < len(expect):
            return False
        f.seek(self.offset - len(expect))
        return f.read(len(expect)) == expect

    def _reset(self, what: str) -> None:
        logger.warning(
            "%s %s under its reader (at byte %d); it must be append-only. Reading it again "
            "from its start.",
            self.path,
            what,
            self.offset,
        )
        self.offset = 0
        self.resets += 1
        self._last_line = b""

    def _split(self, chunk: bytes) -> list[tuple[int, str]]:
        lines: list[tuple[int, str]] = []
        start = last = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break  # a torn last line stays unread until its newline arrives
            raw = chunk[start:end]
            if self.keep_blank or raw.strip():
                lines.append((self.offset + start, raw.decode("utf-8", errors="replace")))
            start, last = end + 1, start
        if start:
            self._last_line = chunk[last:start]
        self.offset += start
        return lines


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:  # rotated away meanwhile
        return None
