"""Overfitting: a validation metric getting worse while its train counterpart does not.

All of these must hold for a train/validation pair:

* the validation metric's best is at least ``patience_steps`` old;
* its recent level (median of the last three evaluations) is worse than its best smoothed
  level by ``worse_rel`` and by more than its evaluation noise;
* its trend since that best points the wrong way;
* the train metric is not clearly getting worse (if both worsen, training itself is sick);
* the summary's gap between them is widening.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import finite_series, linear_fit, median, noise, rolling_median
from autopilot.detectors._base import check_at_least, check_int, num
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import GapSummary, MetricSummary, RunSummary, Window, Windows

RECENT = 3
NOISE_Z = 4.0
"""Worsening must exceed this many evaluation-noise standard deviations."""


class OverfittingDetector:
    """Validation worsening while training improves, with a widening gap.

    Args:
        patience_steps: how old the validation metric's best must be (>= 10).
        worse_rel: how much worse than its best, relative (>= 0), it must be.
        min_points: the fewest finite evaluations it is judged on (>= 3).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "overfitting"

    def __init__(
        self, *, patience_steps: int = 200, worse_rel: float = 0.05, min_points: int = 5
    ) -> None:
        self.patience_steps = check_int("patience_steps", patience_steps, 10)
        self.worse_rel = check_at_least("worse_rel", worse_rel, 0.0)
        self.min_points = check_int("min_points", min_points, 3)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        found = []
        for gap in summary.gaps:
            if not gap.widening:
                continue
            val, train = summary.metrics[gap.val], summary.metrics[gap.train]
            worse = self._val_worsening(val, windows[val.name])
            if worse is not None and _train_holds(train, windows[train.name]):
                found.append(_diagnosis(summary.step, val, train, gap, worse, self.worse_rel))
        return found

    def _val_worsening(self, val: MetricSummary, window: Window) -> float | None:
        """How much worse than its best the validation metric is, relative; ``None`` if not
        convincingly worse."""
        since = val.steps_since_best
        if since is None or val.best is None or since < self.patience_steps:
            return None
        steps, values = finite_series(window)
        if len(values) < max(self.min_points, RECENT + 1):
            return None
        sign = 1.0 if val.mode == "min" else -1.0
        best = _smoothed_best(val, steps, values, sign)
        level = median(values[-RECENT:])
        worse = sign * (level - best) / max(abs(best), val.scale * 1e-3)
        floor = max(self.worse_rel, NOISE_Z * noise(values) / max(abs(best), 1e-12))
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
    worse_rel: float,
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
        "overfit_rel": worse_rel,
    }
    severity: Severity = "high" if worse >= 3 * worse_rel else "medium"
    return Diagnosis(
        kind="overfitting",
        metric=val.name,
        step=step,
        severity=severity,
        message=message,
        evidence=evidence,
    )
