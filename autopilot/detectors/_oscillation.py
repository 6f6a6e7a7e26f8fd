"""Oscillation: the key metric or the train loss swings widely around a flat trend.

The hard part is not to mistake ordinary minibatch noise for instability. A per-batch loss
is independent noise around a smooth curve: averaged over blocks of ``b`` steps, its
volatility shrinks by ``sqrt(b)``. Instability (loss bouncing up for tens of steps, then
back) survives the averaging. So for per-batch metrics the volatility that counts is the
block means' volatility *in excess of* what the within-block noise predicts. Evaluation
metrics (``val/...``) are already averages, so their volatility counts as it is.

Volatility is measured around a quadratic trend (a curving but healthy decline is trend),
and only counts when it dominates the trend: a noisy but clearly improving run is healthy.
"""

from __future__ import annotations

import math

import numpy as np

from autopilot._trends import finite_series, linear_fit, quadratic_residual_std, relative
from autopilot.detectors._base import check_above, is_primary_loss, is_val, key_first
from autopilot.detectors._horizon import SLOW_PROGRESS, progress_from_early, update_ratio_now
from autopilot.diagnoses import Diagnosis, Evidence
from autopilot.summary import MetricSummary, RunSummary, Window, Windows
from kernel.update_ratio import METRIC as UPDATE_RATIO

BLOCKS = 20
MIN_BLOCK = 5
"""Per-batch metrics need ``BLOCKS * MIN_BLOCK`` points before they are judged."""
MIN_EVALS = 10
RECENT_EVALS = 40
"""An evaluation metric is judged on its latest points only: a sparse window spans a long
history whose early decline would otherwise read as trend."""
RECENT_BATCHES = BLOCKS * 10
SETTLED_STEP = 100
"""Update ratios measured before this step are not judged too big (a healthy 2x256 MLP
measures 3.3e-2 at step 20 and 1.2e-2 at step 200)."""
LARGE_UPDATE_RATIO = 2e-2
"""An update ratio above this is large: the bench's healthy runs measure 4.7e-3 to 1.2e-2,
its lr-10x-too-high starts 2.8e-2 to 3.7e-2 (~1e-3 is the classic rule of thumb)."""


class OscillationDetector:
    """Volatility above ``volatility`` that dominates the trend.

    Args:
        volatility: the swings, relative to the metric's level (> 0), that count as
            oscillation.

    Raises:
        ConfigError: when ``volatility`` is not a positive number.
    """

    name = "oscillation"

    def __init__(self, *, volatility: float = 0.2) -> None:
        self.volatility = check_above("volatility", volatility, 0.0)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        names = [n for n in windows if is_primary_loss(n) and not is_val(n)]
        found = []
        for name in key_first(summary, list({*names, summary.key_metric} & set(windows))):
            m = summary.metrics[name]
            measured = _volatility(name, windows[name], m.scale)
            if measured is None:
                continue
            vol, trend = measured
            if vol > self.volatility and vol > trend:
                found.append(_diagnosis(summary.step, m, vol, trend, self.volatility))
        return found or _steps_too_big(summary, windows)


def _steps_too_big(summary: RunSummary, windows: Windows) -> list[Diagnosis]:
    """lr too high: one step moves the weights by more than ``LARGE_UPDATE_RATIO`` of their
    norm (``train/update_ratio``, scaled to the lr now) while the key metric has come less
    than ``SLOW_PROGRESS`` of the way from its early level: steps that big churn the
    weights instead of descending (the swings are there, hidden in per-batch noise)."""
    key = summary.metrics.get(summary.key_metric)
    measured = summary.metrics.get(UPDATE_RATIO)
    if measured is None or (measured.last_step or 0) < SETTLED_STEP:
        return []  # the first steps move small initial weights fast in every run
    ratio = update_ratio_now(summary, windows)
    if key is None or ratio is None or ratio <= LARGE_UPDATE_RATIO:
        return []
    progress = progress_from_early(key)
    if progress is None or progress >= SLOW_PROGRESS:
        return []
    message = (
        f"one step moves the weights by {ratio:.1e} of their norm (train/update_ratio; ~1e-3 "
        f"is typical) while {key.name} has made only {progress:.0%} progress from its early "
        f"level {key.early:.4g}: lr looks too high"
    )
    evidence: Evidence = {"too_big": True, "update_ratio": ratio, "progress": round(progress, 4)}
    return [
        Diagnosis(
            kind="oscillation",
            metric=key.name,
            step=summary.step,
            severity="medium",
            message=message,
            evidence=evidence,
        )
    ]


def _volatility(name: str, window: Window, scale: float) -> tuple[float, float] | None:
    """(volatility, |relative change| of the linear trend across the window)."""
    steps, values = finite_series(window)
    recent = -RECENT_EVALS if is_val(name) else -RECENT_BATCHES
    steps, values = steps[recent:], relative(values[recent:], scale)
    if is_val(name):
        if len(values) < MIN_EVALS:
            return None
        vol = quadratic_residual_std(steps, values)
    else:
        if len(values) < BLOCKS * MIN_BLOCK:
            return None
        steps, values, vol = _excess_block_volatility(steps, values)
    fit = linear_fit(steps, values)
    if vol is None or fit is None:
        return None
    return vol, abs(fit[0]) * float(np.ptp(steps))


def _excess_block_volatility(
    steps: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Block means (steps, values) and their volatility beyond what white noise explains."""
    size = len(values) // BLOCKS
    keep = size * BLOCKS  # the oldest few points are dropped to make whole blocks
    blocks = values[-keep:].reshape(BLOCKS, size)
    block_steps = steps[-keep:].reshape(BLOCKS, size).mean(axis=1)
    means = blocks.mean(axis=1)
    spread = quadratic_residual_std(block_steps, means)
    if spread is None:
        return block_steps, means, None
    # What independent noise alone would give the block means, plus two standard errors
    # of a variance estimated on BLOCKS - 3 degrees of freedom.
    white = float(blocks.var(axis=1, ddof=1).mean()) / size
    allowance = white * (1 + 2 * math.sqrt(2 / (BLOCKS - 3)))
    return block_steps, means, math.sqrt(max(0.0, spread**2 - allowance))


def _diagnosis(
    step: int, m: MetricSummary, vol: float, trend: float, threshold: float
) -> Diagnosis:
    message = (
        f"{m.name} oscillates: swings of {vol:.0%} of its level (threshold {threshold:.0%}) "
        f"around a trend that moves it only {trend:.0%} across its recent window"
    )
    evidence: Evidence = {
        "volatility": vol,
        "trend_change": trend,
        "level": m.scale,
        "threshold": threshold,
    }
    return Diagnosis(
        kind="oscillation",
        metric=m.name,
        step=step,
        severity="high" if vol >= 2 * threshold else "medium",
        message=message,
        evidence=evidence,
    )
