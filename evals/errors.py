"""The offline harness's exception tree."""

from __future__ import annotations

from pathlib import Path


class EvalError(Exception):
    """Base class of every error raised by ``evals``."""


class RunFormatError(EvalError):
    """A recorded run, or a file being imported into one, is malformed.

    ``path`` is the offending file; ``reason`` says what is wrong and what to fix.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
