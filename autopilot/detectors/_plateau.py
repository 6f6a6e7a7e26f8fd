"""Plateau: the key metric has made no meaningful progress for a patience window.

Two conditions, both needed: the run's best has not improved *meaningfully* over the last
``plateau_patience_steps`` (by ``plateau_rel`` of the metric's scale: a steadily improving
metric qualifies only when its gains have become negligible, while a learning rate collapsed
to nothing still sets a new best by 1e-5 at every evaluation), and the trend over that window
is flat (it cannot plausibly deliver ``plateau_rel`` relative improvement per patience
window, and is not plausibly worse either) or clearly worse.

The trend test is what keeps a noisy per-batch key metric quiet: its best is a lucky batch,
so the first condition alone would fire on it, and on 200 noisy points a fitted trend is
so uncertain that it rarely passes as flat. A smooth validation metric passes easily.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import finite_series, linear_fit, relative
from autopilot.config import DetectorSettings
from autopilot.detectors._base import num
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import MetricSummary, RunSummary, Window, Windows

TREND_Z = 2.5
"""A plateau's trend is within this many standard errors of flat (and below progress)."""
WORSE_Z = 4.0
"""A trend this many standard errors worse than flat is a plateau too (a metric sliding
back); between ``TREND_Z`` and this, a noisy metric's trend is more likely bad luck."""


class PlateauDetector:
    """No meaningful improvement of the key metric over the patience window."""

    name = "plateau"

    def detect(
        self, summary: RunSummary, windows: Windows, settings: DetectorSettings
    ) -> list[Diagnosis]:
        key = summary.metrics.get(summary.key_metric)
        patience = settings.plateau_patience_steps
        if key is None or key.steps_since_best is None:
            return []
        if key.steps_since_best < patience and _best_moved(key, windows[key.name], settings):
            return []
        trend = _projected_gain(key, windows[key.name], summary.step, settings)
        if trend is None or not _stalled(*trend, settings.plateau_rel):
            return []
        return [_diagnosis(key, summary.step, trend, settings)]


def _stalled(gain: float, se: float, progress: float) -> bool:
    flat = gain + TREND_Z * se < progress and gain >= -TREND_Z * se
    return flat or gain < -WORSE_Z * se


def _best_moved(key: MetricSummary, window: Window, settings: DetectorSettings) -> bool:
    """Whether the best improved by ``plateau_rel`` of the scale over the patience window
    (``True`` while the window holds no point from before it: too early to say)."""
    steps, values = finite_series(window)
    if len(steps) == 0:
        return True
    cut = int(np.searchsorted(steps, steps[-1] - settings.plateau_patience_steps, side="right"))
    if cut == 0:
        return True
    sign = 1.0 if key.mode == "min" else -1.0
    best_before, best_now = (sign * values[:cut]).min(), (sign * values).min()
    return (best_before - best_now) / key.scale >= settings.plateau_rel


def _projected_gain(
    key: MetricSummary, window: Window, step: int, settings: DetectorSettings
) -> tuple[float, float] | None:
    """Relative improvement the recent trend projects over one patience window, and its
    standard error; ``None`` with too little history."""
    steps, values = finite_series(window)
    if len(steps) < settings.min_points:
        return None
    # The last patience window, but at least a quarter of the window's points: a residual
    # spread measured on a handful of points is itself too noisy to trust.
    first = min(
        int(np.searchsorted(steps, step - settings.plateau_patience_steps)),
        len(steps) - max(settings.min_points, len(steps) // 4),
    )
    recent = slice(max(first, 0), None)
    fit = linear_fit(steps[recent], relative(values[recent], key.scale))
    if fit is None:
        return None
    gain = -fit[0] if key.mode == "min" else fit[0]
    return gain * settings.plateau_patience_steps, fit[1] * settings.plateau_patience_steps


def _diagnosis(
    key: MetricSummary, step: int, trend: tuple[float, float], settings: DetectorSettings
) -> Diagnosis:
    since, patience = key.steps_since_best or 0, settings.plateau_patience_steps
    best = num(key.best) if key.best is not None else "?"
    message = (
        f"{key.name} has not improved for {since} steps (best {best} at step "
        f"{key.best_step}); its trend projects {trend[0]:+.2%} per {patience} steps, "
        f"below the {settings.plateau_rel:.2%} that counts as progress"
    )
    evidence: Evidence = {
        "steps_since_best": since,
        "best": key.best,
        "best_step": key.best_step,
        "projected_gain": trend[0],
        "gain_se": trend[1],
        "patience_steps": patience,
        "plateau_rel": settings.plateau_rel,
    }
    severity: Severity = "medium" if since >= 2 * patience else "low"
    return Diagnosis(
        kind="plateau",
        metric=key.name,
        step=step,
        severity=severity,
        message=message,
        evidence=evidence,
    )
