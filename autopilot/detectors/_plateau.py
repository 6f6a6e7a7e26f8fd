"""Plateau: the key metric has made no meaningful progress for a patience window.

Two conditions, both needed: the run's best has not improved *meaningfully* over the last
``patience_steps`` (by ``progress_rel`` of the metric's scale: a steadily improving
metric qualifies only when its gains have become negligible, while a learning rate collapsed
to nothing still sets a new best by 1e-5 at every evaluation), and the trend over that window
is flat (it cannot plausibly deliver ``progress_rel`` relative improvement per patience
window, and is not plausibly worse either) or clearly worse.

The trend test is what keeps a noisy per-batch key metric quiet: its best is a lucky batch,
so the first condition alone would fire on it, and on 200 noisy points a fitted trend is
so uncertain that it rarely passes as flat. A smooth validation metric passes easily.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import finite_series, linear_fit, relative
from autopilot.detectors._base import check_at_least, check_int, num
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import MetricSummary, RunSummary, Windows

TREND_Z = 2.5
"""A plateau's trend is within this many standard errors of flat (and below progress)."""
WORSE_Z = 4.0
"""A trend this many standard errors worse than flat is a plateau too (a metric sliding
back); between ``TREND_Z`` and this, a noisy metric's trend is more likely bad luck."""


class PlateauDetector:
    """No meaningful improvement of the key metric over the patience window.

    Args:
        patience_steps: how long the best may go without meaningful progress (>= 10).
        progress_rel: the improvement, relative to the metric's scale, that counts as
            progress over a patience window (>= 0).
        min_points: the fewest finite points the trend is fitted on (>= 3).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "plateau"

    def __init__(
        self, *, patience_steps: int = 300, progress_rel: float = 0.01, min_points: int = 5
    ) -> None:
        self.patience_steps = check_int("patience_steps", patience_steps, 10)
        self.progress_rel = check_at_least("progress_rel", progress_rel, 0.0)
        self.min_points = check_int("min_points", min_points, 3)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        key = summary.metrics.get(summary.key_metric)
        if key is None or key.steps_since_best is None:
            return []
        steps, values = finite_series(windows[key.name])
        if key.steps_since_best < self.patience_steps and self._best_moved(key, steps, values):
            return []
        trend = self._projected_gain(key, steps, values, summary.step)
        if trend is None or not _stalled(*trend, self.progress_rel):
            return []
        since = summary.step - self._progress_step(key, steps, values)
        return [self._diagnosis(key, summary.step, since, trend)]

    def _best_moved(self, key: MetricSummary, steps: np.ndarray, values: np.ndarray) -> bool:
        """Whether the best improved by ``progress_rel`` of the scale over the patience
        window (``True`` while the window holds no point from before it: too early to say)."""
        if len(steps) == 0:
            return True
        cut = int(np.searchsorted(steps, steps[-1] - self.patience_steps, side="right"))
        if cut == 0:
            return True
        sign = 1.0 if key.mode == "min" else -1.0
        best_before, best_now = (sign * values[:cut]).min(), (sign * values).min()
        return bool((best_before - best_now) / key.scale >= self.progress_rel)

    def _progress_step(self, key: MetricSummary, steps: np.ndarray, values: np.ndarray) -> int:
        """The step of the last meaningful best: one that beat the meaningful best before it
        by ``progress_rel`` of the scale. Crumb-sized new bests (a collapsed lr still sets
        one at every evaluation) are not progress, so they do not restart the count."""
        if key.best_step is not None and (len(steps) == 0 or key.best_step < steps[0]):
            return key.best_step  # nothing in the window beat the run's best
        if len(steps) == 0:
            return key.last_step or 0
        sign = 1.0 if key.mode == "min" else -1.0
        ref, ref_step = float(sign * values[0]), int(steps[0])
        for step, value in zip(steps[1:].tolist(), (sign * values[1:]).tolist(), strict=True):
            if (ref - value) / key.scale >= self.progress_rel:
                ref, ref_step = value, int(step)
        return ref_step

    def _projected_gain(
        self, key: MetricSummary, steps: np.ndarray, values: np.ndarray, step: int
    ) -> tuple[float, float] | None:
        """Relative improvement the recent trend projects over one patience window, and its
        standard error; ``None`` with too little history."""
        if len(steps) < self.min_points:
            return None
        # The last patience window, but at least a quarter of the window's points: a
        # residual spread measured on a handful of points is itself too noisy to trust.
        first = min(
            int(np.searchsorted(steps, step - self.patience_steps)),
            len(steps) - max(self.min_points, len(steps) // 4),
        )
        recent = slice(max(first, 0), None)
        fit = linear_fit(steps[recent], relative(values[recent], key.scale))
        if fit is None:
            return None
        gain = -fit[0] if key.mode == "min" else fit[0]
        return gain * self.patience_steps, fit[1] * self.patience_steps

    def _diagnosis(
        self, key: MetricSummary, step: int, since: int, trend: tuple[float, float]
    ) -> Diagnosis:
        patience, rel = self.patience_steps, self.progress_rel
        best = num(key.best) if key.best is not None else "?"
        message = (
            f"{key.name} has not improved by {rel:.2%} of its scale for {since} steps "
            f"(best {best} at step {key.best_step}); its trend projects {trend[0]:+.2%} per "
            f"{patience} steps, below the {rel:.2%} that counts as progress"
        )
        evidence: Evidence = {
            "steps_since_progress": since,
            "steps_since_best": key.steps_since_best,
            "best": key.best,
            "best_step": key.best_step,
            "projected_gain": trend[0],
            "gain_se": trend[1],
            "patience_steps": patience,
            "plateau_rel": rel,
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


def _stalled(gain: float, se: float, progress: float) -> bool:
    flat = gain + TREND_Z * se < progress and gain >= -TREND_Z * se
    return flat or gain < -WORSE_Z * se
