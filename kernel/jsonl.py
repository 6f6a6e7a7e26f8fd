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

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def append_line(path: str | os.PathLike[str], line: str) -> int:
    """Append ``line`` (without its newline) as one line; return the byte offset it starts at."""
    data = line.rstrip("\n").encode("utf-8")
    if b"\n" in data:
        raise ValueError("a JSON line must not contain a newline")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end > 0 and not _ends_with_newline(path, end):
                data = b"\n" + data
                end += 1
            os.write(fd, data + b"\n")
            return end
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _ends_with_newline(path: str | os.PathLike[str], size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def append_json(path: str | os.PathLike[str], obj: Any) -> int:
    """Append one JSON document as a line; return the byte offset it starts at."""
    return append_line(path, json.dumps(obj, separators=(",", ":"), allow_nan=False))


def read_models(path: str | os.PathLike[str], model: type[M]) -> list[M]:
    """Every line of ``path`` that validates as ``model``, oldest first; an empty list when
    the file does not exist. A torn or foreign line is skipped with a warning."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.split("\n"):  # not splitlines: U+2028 is text inside a JSON string
        if not line.strip():
            continue
        try:
            found.append(model.model_validate_json(line))
        except ValidationError:
            logger.warning("skipping an unreadable line in %s: %.80s", path, line)
    return found


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
    line, where ``offset`` is the byte position the line starts at (a stable identity).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self._seen_size = -1

    def changed(self) -> bool:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        return size != self._seen_size

    def read_new(self) -> list[tuple[int, str]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._seen_size = size
                if size < self.offset:
                    logger.warning(
                        "%s shrank from %d to %d bytes; it must be append-only. "
                        "Continuing from its new end.",
                        self.path,
                        self.offset,
                        size,
                    )
                    self.offset = size
                    return []
                f.seek(self.offset)
                chunk = f.read(size - self.offset)
        except FileNotFoundError:
            return []
        return self._split(chunk)

    def _split(self, chunk: bytes) -> list[tuple[int, str]]:
        lines: list[tuple[int, str]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break  # a torn last line stays unread until its newline arrives
            raw = chunk[start:end]
            if raw.strip():
                lines.append((self.offset + start, raw.decode("utf-8", errors="replace")))
            start = end + 1
        self.offset += start
        return lines
