"""What a detector is, and the metric-name rules the detectors share.

A detector looks at the summary (and, where it needs more than the summary keeps, at the raw
windows: per metric ``[steps, values]``, read with ``autopilot._trends.series``) and returns
diagnoses as data. It never acts and never raises on odd data: too few points, a missing
metric or non-finite values mean "nothing to report" or a diagnosis.

Example:
    >>> from autopilot.config import DetectorSettings
    >>> from autopilot.diagnoses import Diagnosis
    >>> from autopilot.summary import summarize
    >>> class StuckLr:
    ...     name = "stuck_lr"
    ...     def detect(self, summary, windows, settings):
    ...         lr = summary.metrics.get("lr")
    ...         if lr is None or lr.last != 0.0:
    ...             return []
    ...         return [Diagnosis(kind="plateau", metric="lr", step=summary.step,
    ...                           message="lr is 0: the run cannot improve")]
    >>> windows = {"lr": [list(range(10)), [0.0] * 10]}
    >>> s = summarize(windows, {}, step=9, key_metric="lr", key_mode="min")
    >>> [d.message for d in StuckLr().detect(s, windows, DetectorSettings())]
    ['lr is 0: the run cannot improve']
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from autopilot._trends import median
from autopilot.config import DetectorSettings
from autopilot.diagnoses import Diagnosis, Severity
from autopilot.summary import RunSummary, Windows, metric_pairs, split_role

SEVERITY_RANK: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2}
DENSE_SPACING = 2.0
"""Metrics logged at most this many steps apart are per-batch values (noisy, many points)."""


class Detector(Protocol):
    """Finds one kind of problem; returns one diagnosis per affected metric (or none)."""

    name: str

    def detect(
        self, summary: RunSummary, windows: Windows, settings: DetectorSettings
    ) -> list[Diagnosis]: ...


def is_loss(name: str) -> bool:
    return "loss" in name.lower()


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
