"""Overfitting: a validation metric getting worse while its train counterpart does not.

All of these must hold for a train/validation pair:

* the validation metric's best is at least ``patience_evals`` evaluations old, and at least
  ``patience_frac`` of a run of known length (``patience_steps`` when the length is unknown);
* its recent level (median of the evaluations since its best, at most the last three) is
  worse than its best smoothed level by ``worse_rel`` and by more than its evaluation noise
  (estimated around the minimum, where the curve is a bowl, so a sparse curve's steep
  descent is not read as noise);
* its trend since that best points the wrong way, and still does over the later half of
  the evaluations since (a rise that levelled off long ago is a drift);
* the train metric is not clearly getting worse (if both worsen, training itself is sick);
* the summary's gap between them is widening.

An accuracy-style validation metric (``val/acc``, ``val/f1``...) whose trend since the loss's
best still rises is still improving the model's output: the loss's rise must then reach
``worse_rel_improving`` instead, and the evidence says which metric moderated it.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import (
    finite_series,
    linear_fit,
    median,
    noise,
    quadratic_residual_std,
    rolling_median,
)
from autopilot.detectors._base import check_at_least, check_fraction, check_int, is_val, num
from autopilot.detectors._horizon import evals_after, patience
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import GapSummary, MetricSummary, RunSummary, Window, Windows
from kernel.metric_names import split_role

RECENT = 3
NOISE_Z = 4.0
"""Worsening must exceed this many evaluation-noise standard deviations."""


class OverfittingDetector:
    """Validation worsening while training improves, with a widening gap.

    Args:
        patience_steps: how old the validation metric's best must be in a run of unknown
            length (>= 10).
        worse_rel: how much worse than its best, relative (>= 0), it must be.
        min_points: the fewest finite evaluations it is judged on (>= 3).
        patience_evals: how many evaluations must follow the best (>= 1).
        patience_frac: how old the best must be, as a fraction of a run of known length
            (> 0, <= 1).
        worse_rel_improving: ``worse_rel`` while a paired accuracy-style metric still sets
            bests (>= 0).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "overfitting"

    def __init__(
        self,
        *,
        patience_steps: int = 200,
        worse_rel: float = 0.08,
        min_points: int = 3,
        patience_evals: int = 2,
        patience_frac: float = 0.02,
        worse_rel_improving: float = 0.15,
    ) -> None:
        self.patience_steps = check_int("patience_steps", patience_steps, 10)
        self.worse_rel = check_at_least("worse_rel", worse_rel, 0.0)
        self.min_points = check_int("min_points", min_points, 3)
        self.patience_evals = check_int("patience_evals", patience_evals, 1)
        self.patience_frac = check_fraction("patience_frac", patience_frac)
        self.worse_rel_improving = check_at_least("worse_rel_improving", worse_rel_improving, 0.0)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        found = []
        for gap in summary.gaps:
            if not gap.widening:
                continue
            val, train = summary.metrics[gap.val], summary.metrics[gap.train]
            improving = _still_improving(summary, val, windows)
            needed = self.worse_rel if improving is None else self.worse_rel_improving
            worse = self._val_worsening(summary, val, windows[val.name], needed)
            if worse is not None and _train_holds(train, windows[train.name]):
                found.append(_diagnosis(summary.step, val, train, gap, worse, needed, improving))
        return found

    def _val_worsening(
        self, summary: RunSummary, val: MetricSummary, window: Window, needed: float
    ) -> float | None:
        """How much worse than its best the validation metric is, relative; ``None`` if not
        convincingly worse."""
        since = val.steps_since_best
        if since is None or val.best is None:
            return None
        steps, values = finite_series(window)
        wait = patience(
            max_steps=summary.max_steps,
            cadence=val.cadence,
            evals=self.patience_evals,
            frac=self.patience_frac,
            steps=self.patience_steps,
        )
        after = evals_after(steps, val.best_step)
        if since < wait or after < self.patience_evals:
            return None
        if len(values) < max(self.min_points, self.patience_evals + 1):
            return None  # the best and the evaluations after it: a sparse run has no more
        sign = 1.0 if val.mode == "min" else -1.0
        best = _smoothed_best(val, steps, values, sign)
        level = median(values[-min(RECENT, after) :])
        worse = sign * (level - best) / max(abs(best), val.scale * 1e-3)
        floor = max(
            needed, NOISE_Z * _noise_near_best(steps, values, after) / max(abs(best), 1e-12)
        )
        # still rising: the trend over the later half of the evaluations since the best (all
        # of them, below 8): a rise that levelled off long ago is a drift, not overfitting
        since = int(np.count_nonzero(steps >= (val.best_step or 0)))
        recent = slice(len(steps) - (since if since < 8 else max(4, since // 2)), None)
        fit = linear_fit(steps[recent], values[recent])
        if worse < floor or fit is None or sign * fit[0] <= 0:
            return None
        return worse


def _noise_near_best(steps: np.ndarray, values: np.ndarray, after: int) -> float:
    """The evaluation noise around the best: the spread about a quadratic (a bowl) over the
    points since the best and as many before it, on a sparse curve; the second-difference
    noise of the window on a dense one (30 points or more)."""
    if len(values) >= 30:
        return noise(values)
    start = max(0, len(values) - 2 * after - 2)
    fitted = quadratic_residual_std(steps[start:], values[start:])
    return noise(values) if fitted is None else min(fitted, noise(values))


def _still_improving(summary: RunSummary, val: MetricSummary, windows: Windows) -> str | None:
    """A validation metric of the same split, maximised (accuracy, f1...), whose trend since
    ``val``'s best rises by more than one standard error: the model's output still improves
    while the loss rises. (Its best alone would not do: a noisy accuracy sets a lucky best.)"""
    role, _ = split_role(val.name)
    for name in sorted(summary.metrics):
        other = summary.metrics[name]
        if name == val.name or not is_val(name) or split_role(name)[0] != role:
            continue
        if other.mode != "max" or val.best_step is None:
            continue
        steps, values = finite_series(windows[name])
        since = steps >= val.best_step
        fit = linear_fit(steps[since], values[since]) if since.sum() >= 3 else None
        if fit is not None and fit[0] > fit[1]:
            return name
    return None


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
    improving: str | None,
) -> Diagnosis:
    widening = 0.0 if gap.gap_slope is None else gap.gap_slope
    message = (
        f"{val.name} is {worse:.1%} worse than its best ({num(val.best or 0.0)} at step "
        f"{val.best_step}, {val.steps_since_best} steps ago) while {train.name} holds or "
        f"improves; the gap widens {widening:+.2%} of scale per 100 steps"
    )
    if improving is not None:
        message += f"; {improving} still sets bests, so a rise of {worse_rel:.0%} was required"
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
        "moderated_by": improving,
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
