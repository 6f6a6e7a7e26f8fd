"""Reading what anyone who can write to the run directory may have crafted.

A run directory often sits on a shared filesystem, so its files are input, not state: each
line is validated into a pydantic model, and a line that does not validate is skipped and
reported once (with the file and the line number), never a crash. Only regular files are
read (a FIFO dropped in place of a file would block the reader forever).

Example:
    >>> import tempfile, pathlib
    >>> from pydantic import BaseModel
    >>> class Row(BaseModel):
    ...     step: int
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"step": 1}\\n{"step": "abc"}\\n{"step": 3}\\n')
    >>> [(n, row.step) for n, row in read_valid(path, Row)]
    [(1, 1), (3, 3)]
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kernel.errors import RunDirError
from kernel.regular_files import open_regular
from kernel.validation import summarize_validation_error

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_REPORTED = 4096
"""How many skipped lines are remembered as reported (then the memory starts over)."""
SHOWN_CHARS = 80
"""A skipped line is shown in the warning up to this many characters."""

_reported: set[tuple[str, int, int]] = set()
_reported_lock = threading.Lock()


def report_invalid(path: str | os.PathLike[str], line: int, text: str, why: str) -> bool:
    """Warn that line ``line`` of ``path`` was skipped, once per file, line and content.

    Returns whether this call warned (``False``: it was reported before)."""
    key = (os.fspath(path), line, hash(text))
    with _reported_lock:
        if key in _reported:
            return False
        if len(_reported) >= MAX_REPORTED:
            _reported.clear()
        _reported.add(key)
    logger.warning(
        "skipping an unreadable line in %s:%d (%s): %.*r", path, line, why, SHOWN_CHARS, text
    )
    return True


def read_regular(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> str | None:
    """The text of ``path`` if it is a regular file (at most ``max_bytes`` of it); ``None``
    when it does not exist or is not a regular file (reported once). Opened by
    ``kernel.regular_files.open_regular``: a FIFO or a device is never read."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except RunDirError as exc:
        report_invalid(path, 0, "", str(exc))
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes)
    return data.decode("utf-8", errors="replace")


def read_valid(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    max_bytes: int | None = None,
) -> list[tuple[int, M]]:
    """Each line of ``path`` that validates as ``model``, with its line number (from 1).

    Blank lines are skipped; an invalid line is skipped and reported once; a last line
    without its newline that does not validate is a line being written, skipped silently.

    Args:
        path: the file; missing or not a regular file: no lines.
        model: what each line must be.
        context: passed to pydantic's validators (e.g. the names a field may take).
        max_bytes: read at most this much of the file.
    """
    text = read_regular(path, max_bytes=max_bytes)
    if text is None:
        return []
    lines = text.split("\n")  # not splitlines: U+2028 is text inside a JSON string
    found: list[tuple[int, M]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append((n, model.model_validate_json(line, context=context)))
        except ValidationError as exc:
            if n < len(lines):
                report_invalid(path, n, line, summarize_validation_error(exc, limit=1))
    return found


class LineNumbers:
    """Line numbers for byte offsets of a file read incrementally (by ``JsonlTail``).

    Offsets are asked in increasing order, so each byte is counted once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._line = 1

    def at(self, offset: int) -> int:
        """The number (from 1) of the line that starts at byte ``offset``."""
        if offset < self._offset:  # the file was replaced: count again from its start
            self._offset, self._line = 0, 1
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                self._line += f.read(offset - self._offset).count(b"\n")
        except OSError:
            return 0
        self._offset = offset
        return self._line


SAFE_NAME = r"^[A-Za-z_][A-Za-z0-9_./\-\[\]]{0,63}$"
"""A name (knob, metric) that may be shown as-is, even in a prompt: letters, digits and
``_ . / - [ ]``, at most 64 characters. Anything else is data to be quoted, or refused."""
