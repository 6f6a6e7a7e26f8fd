"""Evaluate: did an applied change help? Measured against the trend projected before it.

When the autopilot first sees an applied change in the ledger it fits a line through the key
metric's points just before the change (the *baseline*). After ``horizon_steps`` it compares
the key metric's mean over the second half of the horizon with that line, extrapolated at
half its slope (learning curves flatten, so a full-slope projection would call most changes
harmful), and never past the best value seen before the change (a run recovering from a
spike falls steeply, and that slope does not go on). The signed relative difference is the
effect: positive means better than the run was heading. A change clearly worse than
projected is rolled back in the auto modes.
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

import numpy as np

from autopilot import _trends
from autopilot.config import EvaluateSettings
from autopilot.summary import Window
from kernel import LedgerRow

_DAMPING = 0.5


def make_baseline(
    row: LedgerRow,
    window: Window,
    horizon: int,
    decision_id: str | None,
    mode: str = "min",
) -> dict[str, Any]:
    """The trend of the key metric's ``[steps, values]`` window up to the change in ``row``,
    as plain data."""
    step = int(row.step or 0)
    pre = [(s, v) for s, v in _points(window) if s <= step and math.isfinite(v)]
    recent = [(s, v) for s, v in pre if s > step - horizon] or pre[-3:]
    level, slope = _line(recent, step)
    finite = [v for _, v in recent]
    return {
        "best_before": (min(finite) if mode == "min" else max(finite)) if finite else None,
        "command_id": row.command_id,
        "decision_id": decision_id,
        "knob": row.knob,
        "source": row.source,
        "proposed_by": row.proposed_by,
        "before": row.before,
        "after": row.after,
        "intent": row.intent or "set",
        "for_diagnosis": row.for_diagnosis,
        "applied_step": step,
        "level": level,
        "slope": slope,
    }


def _points(window: Window) -> list[tuple[float, float]]:
    return list(zip(*window, strict=True)) if window else []


def _line(points: list[tuple[float, float]], at: int) -> tuple[float | None, float]:
    """Least-squares line through ``points``: its value at step ``at`` and its slope."""
    if not points:
        return None, 0.0
    steps, values = np.array(points, dtype=float).T
    return _trends.line_at(steps, values, at)


def measure(
    baseline: dict[str, Any],
    window: Window,
    key_mode: str,
    settings: EvaluateSettings,
) -> dict[str, Any] | None:
    """The effect of the change on the key metric's ``[steps, values]`` window, or ``None``
    when there is nothing to compare yet."""
    start = baseline["applied_step"]
    horizon = settings.horizon_steps
    points = _points(window)
    post = [(s, v) for s, v in points if start + horizon / 2 < s <= start + horizon]
    post = post or [(s, v) for s, v in points if start < s <= start + horizon][-1:]
    if baseline["level"] is None or not post:
        return None
    values = [v for _, v in post]
    at = fmean(s for s, _ in post)
    projected = baseline["level"] + _DAMPING * baseline["slope"] * (at - start)
    best = baseline.get("best_before")
    if best is not None:  # a trend is never credited with beating the best seen before
        projected = max(projected, best) if key_mode == "min" else min(projected, best)
    observed = fmean(values) if all(math.isfinite(v) for v in values) else math.inf
    return _effect(projected, observed, key_mode, settings)


def _effect(
    projected: float, observed: float, key_mode: str, settings: EvaluateSettings
) -> dict[str, Any]:
    if not math.isfinite(observed):
        change = -1.0
    else:
        gain = projected - observed if key_mode == "min" else observed - projected
        change = gain / max(abs(projected), 1e-12)
    verdict = (
        "better"
        if change > settings.better_rel
        else "worse"
        if change < -settings.worse_rel
        else "neutral"
    )
    return {
        "projected": float(projected),
        "observed": float(observed) if math.isfinite(observed) else None,
        "change_rel": float(change),
        "verdict": verdict,
    }
