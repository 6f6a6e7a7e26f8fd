"""Overfitting: a validation metric getting worse while its train counterpart does not.

All of these must hold for a train/validation pair:

* the validation metric's best is at least ``overfit_patience_steps`` old;
* its recent level (median of the last three evaluations) is worse than its best smoothed
  level by ``overfit_rel`` and by more than its evaluation noise;
* its trend since that best points the wrong way;
* the train metric is not clearly getting worse (if both worsen, training itself is sick);
* the summary's gap between them is widening.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import finite_series, linear_fit, median, noise, rolling_median
from autopilot.config import DetectorSettings
from autopilot.detectors._base import num
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import GapSummary, MetricSummary, RunSummary, Window, Windows

RECENT = 3
NOISE_Z = 4.0
"""Worsening must exceed this many evaluation-noise standard deviations."""


class OverfittingDetector:
    """Validation worsening while training improves, with a widening gap."""

    name = "overfitting"

    def detect(
        self, summary: RunSummary, windows: Windows, settings: DetectorSettings
    ) -> list[Diagnosis]:
        found = []
        for gap in summary.gaps:
            if not gap.widening:
                continue
            val, train = summary.metrics[gap.val], summary.metrics[gap.train]
            worse = _val_worsening(val, windows[val.name], settings)
            if worse is not None and _train_holds(train, windows[train.name]):
                found.append(_diagnosis(summary.step, val, train, gap, worse, settings))
        return found


def _val_worsening(val: MetricSummary, window: Window, settings: DetectorSettings) -> float | None:
    """How much worse than its best the validation metric is, relative; ``None`` if not
    convincingly worse."""
    since = val.steps_since_best
    if since is None or val.best is None or since < settings.overfit_patience_steps:
        return None
    steps, values = finite_series(window)
    if len(values) < max(settings.min_points, RECENT + 1):
        return None
    sign = 1.0 if val.mode == "min" else -1.0
    best = _smoothed_best(val, steps, values, sign)
    level = median(values[-RECENT:])
    worse = sign * (level - best) / max(abs(best), val.scale * 1e-3)
    floor = max(settings.overfit_rel, NOISE_Z * noise(values) / max(abs(best), 1e-12))
    since_best = steps >= (val.best_step or 0)
    fit = linear_fit(steps[since_best], values[since_best])
    if worse < floor or fit is None or sign * fit[0] <= 0:
        return None
    return worse


def _smoothed_best(val: MetricSummary, steps: np.ndarray, values: np.ndarray, sign: float) -> float:
    # The run's best raw evaluation may be a lucky one; inside the window the best of a
    # 3-point running median is used instead.
    if val.best_step is not None and val.best_step < steps[0]:
        return float(val.best or 0.0)
    return sign * float(np.min(sign * rolling_median(values, RECENT)))


def _train_holds(train: MetricSummary, window: Window) -> bool:
    """The train metric improves, or at least is not clearly (one standard error) worse."""
    steps, values = finite_series(window)
    fit = linear_fit(steps, values)
    if fit is None:
        return False
    gain = -fit[0] if train.mode == "min" else fit[0]
    return gain > -fit[1]


def _diagnosis(
    step: int,
    val: MetricSummary,
    train: MetricSummary,
    gap: GapSummary,
    worse: float,
    settings: DetectorSettings,
) -> Diagnosis:
    widening = 0.0 if gap.gap_slope is None else gap.gap_slope
    message = (
        f"{val.name} is {worse:.1%} worse than its best ({num(val.best or 0.0)} at step "
        f"{val.best_step}, {val.steps_since_best} steps ago) while {train.name} holds or "
        f"improves; the gap widens {widening:+.2%} of scale per 100 steps"
    )
    evidence: Evidence = {
        "val": val.name,
        "train": train.name,
        "worse_rel": worse,
        "best": val.best,
        "best_step": val.best_step,
        "steps_since_best": val.steps_since_best,
        "gap": gap.gap,
        "gap_slope": gap.gap_slope,
        "overfit_rel": settings.overfit_rel,
    }
    severity: Severity = "high" if worse >= 3 * settings.overfit_rel else "medium"
    return Diagnosis(
        kind="overfitting",
        metric=val.name,
        step=step,
        severity=severity,
        message=message,
        evidence=evidence,
    )
