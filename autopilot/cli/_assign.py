"""``KNOB=VALUE`` assignments of ``autopilot set`` and ``review approve --edit``: the core's
parser (``autopilot.assignments``), its refusals as ``CliError``."""

from __future__ import annotations

from autopilot import assignments
from autopilot.assignments import Assignment
from autopilot.cli._common import CliError
from kernel import KernelState

__all__ = ["Assignment", "parse_assignment"]


def parse_assignment(text: str, state: KernelState | None = None) -> Assignment:
    """``autopilot.assignments.parse_assignment``.

    Raises:
        CliError: with a one-line reason and the accepted forms.
    """
    try:
        return assignments.parse_assignment(text, state)
    except assignments.AssignmentError as exc:
        raise CliError(str(exc)) from None
