"""What a detector is, and the metric-name rules the detectors share.

A detector looks at the summary (and, where it needs more than the summary keeps, at the raw
windows: per metric ``[steps, values]``, read with ``autopilot._trends.series``) and returns
diagnoses as data. It never acts and never raises on odd data: too few points, a missing
metric or non-finite values mean "nothing to report" or a diagnosis.

A detector takes its parameters in its constructor and validates them there (a bad value
raises ``ConfigError`` saying what it must be and what it got), so a configured detector is
a plain object that can be passed to the graph (``Autopilot(..., detectors=[...])``).

Example:
    >>> from autopilot.diagnoses import Diagnosis
    >>> from autopilot.summary import summarize
    >>> class StuckLr:
    ...     name = "stuck_lr"
    ...     def __init__(self, *, floor: float = 0.0) -> None:
    ...         self.floor = check_at_least("floor", floor, 0.0)
    ...     def detect(self, summary, windows):
    ...         lr = summary.metrics.get("lr")
    ...         if lr is None or lr.last is None or lr.last > self.floor:
    ...             return []
    ...         return [Diagnosis(kind="plateau", metric="lr", step=summary.step,
    ...                           message=f"lr is {lr.last}: the run cannot improve")]
    >>> windows = {"lr": [list(range(10)), [0.0] * 10]}
    >>> s = summarize(windows, {}, step=9, key_metric="lr", key_mode="min")
    >>> [d.message for d in StuckLr().detect(s, windows)]
    ['lr is 0.0: the run cannot improve']
    >>> StuckLr(floor=-1)
    Traceback (most recent call last):
    ...
    autopilot.errors.ConfigError: floor must be >= 0.0, got -1
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from autopilot._trends import median
from autopilot.diagnoses import Diagnosis, Severity
from autopilot.errors import ConfigError
from autopilot.summary import RunSummary, Windows
from kernel.metric_names import metric_pairs, split_role

SEVERITY_RANK: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2}
DENSE_SPACING = 2.0
"""Metrics logged at most this many steps apart are per-batch values (noisy, many points)."""


class Detector(Protocol):
    """Finds one kind of problem; returns one diagnosis per affected metric (or none)."""

    name: str

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]: ...


def check_int(name: str, value: int, minimum: int) -> int:
    """``value`` when it is an integer of at least ``minimum``; else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_at_least(name: str, value: float, minimum: float) -> float:
    """``value`` when it is a finite number of at least ``minimum``; else ``ConfigError``."""
    if not _finite(value) or value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def check_above(name: str, value: float, bound: float) -> float:
    """``value`` when it is a finite number above ``bound``; else ``ConfigError``."""
    if not _finite(value) or value <= bound:
        raise ConfigError(f"{name} must be > {bound}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: float) -> float:
    """``value`` when it is a finite number in ``(0, 1]``; else ``ConfigError``."""
    if not _finite(value) or not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def is_primary_loss(name: str) -> bool:
    """``loss``, ``train/loss``, ``val_loss``...: a total loss, not a component of it."""
    return split_role(name)[1].lower() == "loss"


def is_grad_norm(name: str) -> bool:
    lower = name.lower()
    return "grad" in lower and "norm" in lower


def is_val(name: str) -> bool:
    return split_role(name)[0] == "val"


def paired_vals(summary: RunSummary) -> set[str]:
    """Validation metrics whose train counterpart is logged too."""
    return {val for _, val in metric_pairs(list(summary.metrics))}


def is_dense(steps: np.ndarray) -> bool:
    return len(steps) > 1 and median(np.diff(steps)) <= DENSE_SPACING


def key_first(summary: RunSummary, names: list[str]) -> list[str]:
    """``names`` sorted, with the key metric (when among them) first."""
    key = summary.key_metric
    return [key] * (key in names) + sorted(n for n in names if n != key)


def num(value: float) -> str:
    """A number for a message: 3 significant digits."""
    return f"{value:.3g}"
