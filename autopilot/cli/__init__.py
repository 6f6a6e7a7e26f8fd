"""The ``autopilot`` command line: talk to a training run through its run directory.

Parsing needs only ``argparse`` and the settings model (for the list of modes); a
subcommand's module (and with it the kernel and torch) is imported when that subcommand
runs, so ``autopilot --help`` stays fast.

Example:
    >>> from autopilot.cli import main
    >>> main(["--dir", "runs/exp1", "set", "lr=x0.5"])  # doctest: +SKIP
    queued human-1f2e3d4c5b6a: lr x0.5 (applied at the next step)
    0
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from autopilot.cli._common import USAGE_ERROR, CliError
from autopilot.cli._parser import build_parser

__all__ = ["CliError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        0 on success, 1 when the command ran but the outcome is bad (a rejected change, no
        kernel yet), 2 for a mistake the user can fix (one ``error: ...`` line on stderr).
    """
    try:
        args = build_parser().parse_args(argv)
        return _run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # the reader went away, e.g. `autopilot ledger | head`
        _silence_stdout()
        return 141
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"error: {exc.strerror or exc}{where}; check the path and its permissions",
            file=sys.stderr,
        )
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0


def _run(args: argparse.Namespace) -> int:
    module_name, func_name = args.handler.split(":")
    qualified = module_name if "." in module_name else f"autopilot.cli.{module_name}"
    module = importlib.import_module(qualified)
    from kernel.errors import KernelError  # after the handler: both need torch anyway

    try:
        return int(getattr(module, func_name)(args))
    except KernelError as exc:
        raise CliError(str(exc)) from None


def _silence_stdout() -> None:
    # so that the interpreter's final flush does not fail on the closed pipe again
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
