"""What every subcommand shares: the error type and finding the run directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

USAGE_ERROR = 2
"""Exit status of a mistake the user can fix (bad syntax, unknown knob, missing file)."""
ENV_DIR = "AUTOPILOT_DIR"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with ``(default: ...)``, unless it has none to show (a flag,
    an option without a default) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


class CliError(Exception):
    """A one-line message for the user; ``main`` prints it as ``error: ...``.

    Args:
        message: what went wrong and what to do next.
        code: the exit status (2 for mistakes the user can fix).
    """

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def run_dir_of(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
    """The run directory named by ``--dir`` or ``$AUTOPILOT_DIR``.

    Raises:
        CliError: when neither names one, or it does not exist and ``must_exist``.
    """
    name = getattr(args, "dir", None) or os.environ.get(ENV_DIR)
    if not name:
        raise CliError(f"no run directory: pass --dir D or set {ENV_DIR}")
    path = Path(name)
    if must_exist and not path.is_dir():
        raise CliError(
            f"run directory {path} does not exist; pass the directory the training "
            "gives Kernel(...) as --dir"
        )
    return path
