"""The autopilot's exception tree. Guards and detectors return verdicts as data; these are
raised only for mistakes a user must fix (a bad config, an unknown proposal id) and for
the LLM and budget failures that the graph turns into a rule fallback."""

from __future__ import annotations


class AutopilotError(Exception):
    """Base of every error the autopilot raises on purpose."""


class ConfigError(AutopilotError, ValueError):
    """A setting is invalid: in ``autopilot.toml``, an environment override, or the
    constructor of a configurable part (a detector); the message says which, what it must
    be and what it got. A ``ValueError`` too, as Optuna's pruners raise for bad arguments."""


class BudgetExceeded(AutopilotError):
    """An LLM call was refused because it could push spend past a cap.

    Args:
        reason: which cap, what was spent, and what the call could cost.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReviewError(AutopilotError):
    """A review-queue action cannot be done (unknown id, expired, already decided)."""
