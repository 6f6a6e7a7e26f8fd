"""The kernel's exception tree.

The training loop never sees these from ``Kernel.step`` or ``Kernel.log``: the kernel turns
them into ledger rows or log lines. They reach users of the library functions (the CLI, the
autopilot) that write commands or read run-directory files.
"""

from __future__ import annotations


class KernelError(Exception):
    """Base class of every error raised by ``kernel``."""


class CommandError(KernelError):
    """A command line or command object is malformed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KnobError(KernelError):
    """A value cannot be given to a knob (wrong type, outside bounds, unknown knob)."""

    def __init__(self, knob: str, reason: str) -> None:
        super().__init__(f"{knob}: {reason}")
        self.knob = knob
        self.reason = reason


class RunDirError(KernelError):
    """A run-directory file is missing or unreadable; the message says which and what to do."""
