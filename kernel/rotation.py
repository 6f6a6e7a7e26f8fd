"""Size-based rotation of an append-only JSON-lines file (``metrics.jsonl``).

``rotate`` renames ``metrics.jsonl`` to ``metrics.1.jsonl``, after shifting the older files
up (``metrics.1.jsonl`` to ``metrics.2.jsonl`` ...) and deleting those past ``keep``; the
writer then starts a new ``metrics.jsonl``. A rename keeps a file's inode, so a reader that
was tailing the old file finds it again among ``rotated_paths`` by inode and finishes it
(``kernel.jsonl.JsonlTail``).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> for text in ("a", "b", "c"):
    ...     _ = path.write_text(text + "\\n")
    ...     rotate(path, keep=2)
    >>> [(p.name, p.read_text()) for p in rotated_paths(path)]
    [('metrics.2.jsonl', 'b\\n'), ('metrics.1.jsonl', 'c\\n')]
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path


def rotated_path(path: str | os.PathLike[str], n: int) -> Path:
    """The ``n``-th rotated file of ``path``: ``metrics.jsonl`` -> ``metrics.<n>.jsonl``."""
    target = Path(path)
    return target.with_name(f"{target.stem}.{n}{target.suffix}")


def rotated_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The rotated files of ``path`` that exist, oldest first (``metrics.1.jsonl`` last)."""
    return [found for _, found in sorted(_numbered(path), reverse=True)]


def _numbered(path: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    target = Path(path)
    pattern = re.compile(rf"{re.escape(target.stem)}\.([1-9][0-9]*){re.escape(target.suffix)}")
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    found = [(pattern.fullmatch(name), name) for name in names]
    return [(int(m.group(1)), target.parent / name) for m, name in found if m]


def rotate(path: str | os.PathLike[str], keep: int) -> None:
    """Rename ``path`` to its first rotated file, keeping ``keep`` rotated files (>= 1).

    Raises:
        OSError: a rename failed; ``path`` may then still be in place (the writer appends
            to it and tries again at its next flush).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 rotated file, got {keep}")
    for n, extra in _numbered(path):
        if n > keep:  # left by a run that kept more
            extra.unlink(missing_ok=True)
    for n in range(keep, 1, -1):  # metrics.<keep-1> replaces (deletes) metrics.<keep>
        with contextlib.suppress(FileNotFoundError):  # fewer files rotated so far
            os.replace(rotated_path(path, n - 1), rotated_path(path, n))
    os.replace(path, rotated_path(path, 1))
