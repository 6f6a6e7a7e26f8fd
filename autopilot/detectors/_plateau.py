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

The patience window knows the run (``autopilot.detectors._horizon``): with a planned length
it is ``patience_frac`` of the run and at least ``patience_evals`` evaluations of the key
metric; without one, ``patience_steps``. A flat tail while a schedule anneals the learning
rate toward zero is what the schedule is for, not a plateau, once the loss has come down
(below ``still_high`` of its early level); a loss still near where it started is a plateau
whatever the schedule does. A validation metric whose training counterpart still improves
is no plateau either: the model still learns, and a validation curve that stalls or worsens
meanwhile is overfitting's question (the written labelling rule asks the same: neither
curve improves).
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import finite_series, linear_fit, relative
from autopilot.detectors._base import (
    check_at_least,
    check_fraction,
    check_int,
    is_primary_loss,
    is_val,
    num,
)
from autopilot.detectors._horizon import (
    SLOW_PROGRESS,
    annealed_lr,
    collapsed_lr,
    lr_before_drop,
    patience,
    progress_from_early,
    update_ratio_now,
)
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import MetricSummary, RunSummary, Windows
from kernel.metric_names import metric_pairs

TREND_Z = 2.5
"""A plateau's trend is within this many standard errors of flat (and below progress)."""
COLLAPSED = 0.1
"""An lr below this fraction of its peak after a one-step drop has collapsed (evidence
``lr_collapsed``: the rules then raise it)."""
TINY_UPDATE_RATIO = 2e-3
"""An update ratio below this (one step moves the weights by under 0.2 % of their norm) is
tiny: healthy runs of the bench measure 4.7e-3 to 1.2e-2, their lr-100x-too-low starts 2.5e-4
to 9.1e-4. Alone it says little (a fine-tune moves its weights little by design)."""
SLOW_MIN_STEPS = 100
_ROUNDING = 1e-12
WORSE_Z = 4.0
"""A trend this many standard errors worse than flat is a plateau too (a metric sliding
back); between ``TREND_Z`` and this, a noisy metric's trend is more likely bad luck."""


class PlateauDetector:
    """No meaningful improvement of the key metric over the patience window.

    Args:
        patience_steps: how long the best may go without meaningful progress, in a run of
            unknown length (>= 10).
        progress_rel: the improvement, relative to the metric's scale, that counts as
            progress over a patience window (>= 0).
        min_points: the fewest finite points the trend is fitted on (>= 3).
        patience_evals: the fewest evaluations of the key metric a patience window holds
            (>= 1).
        patience_frac: the patience window as a fraction of a run of known length (> 0,
            <= 1).
        anneal_frac: an lr decayed gradually below this fraction of its peak is annealing
            (> 0, <= 1).
        still_high: under an annealing lr, a flat tail is a plateau only while the loss is
            at least this fraction of its early level (>= 0).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "plateau"

    def __init__(
        self,
        *,
        patience_steps: int = 250,
        progress_rel: float = 0.01,
        min_points: int = 5,
        patience_evals: int = 4,
        patience_frac: float = 0.2,
        anneal_frac: float = 0.5,
        still_high: float = 0.5,
    ) -> None:
        self.patience_steps = check_int("patience_steps", patience_steps, 10)
        self.progress_rel = check_at_least("progress_rel", progress_rel, 0.0)
        self.min_points = check_int("min_points", min_points, 3)
        self.patience_evals = check_int("patience_evals", patience_evals, 1)
        self.patience_frac = check_fraction("patience_frac", patience_frac)
        self.anneal_frac = check_fraction("anneal_frac", anneal_frac)
        self.still_high = check_at_least("still_high", still_high, 0.0)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        key = summary.metrics.get(summary.key_metric)
        if key is None or key.steps_since_best is None:
            return []
        wait = patience(
            max_steps=summary.max_steps,
            cadence=key.cadence,
            evals=self.patience_evals,
            frac=self.patience_frac,
            steps=self.patience_steps,
        )
        if collapsed_lr(summary, COLLAPSED) is not None:
            wait = max(wait // 2, 2 * int(key.cadence or 1))  # a bug's stall needs no long wait
        found = self._flat(summary, windows, key, wait)
        return found or self._too_slow(summary, windows, key)

    def _too_slow(
        self, summary: RunSummary, windows: Windows, key: MetricSummary
    ) -> list[Diagnosis]:
        """lr too low: the key metric still improves, but has made little progress from its
        early level, while the update ratio (``train/update_ratio``, scaled to the lr in
        force now) says one step barely moves the weights."""
        ratio = update_ratio_now(summary, windows)
        if ratio is None or ratio >= TINY_UPDATE_RATIO or summary.step < SLOW_MIN_STEPS:
            return []
        progress = progress_from_early(key)
        if progress is None or progress >= SLOW_PROGRESS:
            return []
        if annealed_lr(summary, windows, self.anneal_frac) is not None:
            return []  # the schedule took the lr down on purpose
        message = (
            f"{key.name} has made only {progress:.0%} progress from its early level "
            f"{num(key.early or 0.0)} by step {summary.step}, and one step moves the weights by "
            f"{ratio:.1e} of their norm (train/update_ratio; ~1e-3 is typical): lr looks too low"
        )
        evidence: Evidence = {
            "slow": True,
            "update_ratio": ratio,
            "progress": round(progress, 4),
            "early": key.early,
            "best": key.best,
            "best_step": key.best_step,
        }
        collapsed = collapsed_lr(summary, COLLAPSED)
        if collapsed is not None:
            evidence.update(lr_collapsed=collapsed, lr_before=lr_before_drop(windows))
            message += f"; lr is {collapsed:.2g} of its peak after a drop no schedule makes"
        return [
            Diagnosis(
                kind="plateau",
                metric=key.name,
                step=summary.step,
                severity="medium",
                message=message,
                evidence=evidence,
            )
        ]

    def _flat(
        self, summary: RunSummary, windows: Windows, key: MetricSummary, wait: int
    ) -> list[Diagnosis]:
        assert key.steps_since_best is not None
        steps, values = finite_series(windows[key.name])
        if key.steps_since_best < wait and self._best_moved(key, steps, values, wait):
            return []
        trend = self._projected_gain(key, steps, values, summary.step, wait)
        if trend is None or not _stalled(*trend, self.progress_rel):
            return []
        if self._train_still_learns(summary, key, windows, wait):
            return []  # the model still learns; whether it generalises is overfitting's call
        annealed = annealed_lr(summary, windows, self.anneal_frac)
        level = _level_over_early(summary)
        if annealed is not None and (level is None or level < self.still_high):
            return []  # the schedule's flat tail: the loss came down and the lr is going out
        since = summary.step - self._progress_step(key, steps, values)
        collapsed = collapsed_lr(summary, COLLAPSED)
        diagnosis = self._diagnosis(key, summary.step, since, trend, wait, annealed, level)
        if collapsed is None:
            return [diagnosis]
        evidence = {
            **diagnosis.evidence,
            "lr_collapsed": collapsed,
            "lr_before": lr_before_drop(windows),
        }
        message = (
            f"{diagnosis.message}; lr is {collapsed:.2g} of its peak after a drop no schedule makes"
        )
        return [diagnosis.model_copy(update={"evidence": evidence, "message": message})]

    def _train_still_learns(
        self, summary: RunSummary, key: MetricSummary, windows: Windows, wait: int
    ) -> bool:
        """Whether ``key`` is a validation metric whose training counterpart's trend over
        the patience window still projects progress, clearly (a noisy flat one does not)."""
        pairs = metric_pairs(list(summary.metrics))
        train_name = next((t for t, v in pairs if v == key.name), None)
        train = summary.metrics.get(train_name) if train_name else None
        if train is None or train.mode != key.mode:
            return False
        steps, values = finite_series(windows[train.name])
        trend = self._projected_gain(train, steps, values, summary.step, wait)
        # progress, beyond noise (a noisy per-batch loss whose trend is uncertain does not count)
        return trend is not None and trend[0] >= self.progress_rel and trend[0] > TREND_Z * trend[1]

    def _best_moved(
        self, key: MetricSummary, steps: np.ndarray, values: np.ndarray, wait: int
    ) -> bool:
        """Whether the best improved by ``progress_rel`` of the scale over the patience
        window (``True`` while the window holds no point from before it: too early to say)."""
        if len(steps) == 0:
            return True
        cut = int(np.searchsorted(steps, steps[-1] - wait, side="right"))
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
        self, key: MetricSummary, steps: np.ndarray, values: np.ndarray, step: int, wait: int
    ) -> tuple[float, float] | None:
        """Relative improvement the recent trend projects over one patience window, and its
        standard error; ``None`` with too little history."""
        if len(steps) < self.min_points:
            return None
        # The last patience window, but at least a quarter of the window's points: a
        # residual spread measured on a handful of points is itself too noisy to trust.
        first = min(
            int(np.searchsorted(steps, step - wait)),
            len(steps) - max(self.min_points, len(steps) // 4),
        )
        recent = slice(max(first, 0), None)
        fit = linear_fit(steps[recent], relative(values[recent], key.scale))
        if fit is None:
            return None
        gain = -fit[0] if key.mode == "min" else fit[0]
        return gain * wait, fit[1] * wait

    def _diagnosis(
        self,
        key: MetricSummary,
        step: int,
        since: int,
        trend: tuple[float, float],
        patience: int,
        annealed: float | None,
        level: float | None,
    ) -> Diagnosis:
        rel = self.progress_rel
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
            "lr_over_peak": annealed,
            "loss_over_early": level,
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


def _level_over_early(summary: RunSummary) -> float | None:
    """The training loss's latest level over its early level (the key metric's, with no
    training loss logged); ``None`` when unknown."""
    names = [n for n in summary.metrics if is_primary_loss(n) and not is_val(n)]
    for name in [*sorted(names), summary.key_metric]:
        m = summary.metrics.get(name)
        if m is not None and m.last is not None and m.early and m.early > 0:
            return m.last / m.early
    return None


def _stalled(gain: float, se: float, progress: float) -> bool:
    se = max(se, _ROUNDING)  # a constant curve's fit is exact up to rounding either way
    flat = gain + TREND_Z * se < progress and gain >= -TREND_Z * se
    return flat or gain < -WORSE_Z * se
