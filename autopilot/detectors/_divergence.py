"""Divergence: a loss that turned non-finite, jumped far above its recent best, or a
gradient norm that exploded.

A single bad batch is not a divergence: a jump must hold for the last few points (five for
training metrics, however sparsely logged, three for evaluations), and must clear the
metric's own noise. The reference is the best *smoothed* level of the window, not the run's
best raw value, which for a noisy per-batch loss is a lucky batch. A ratio alone misleads
near zero (a fine-tune's loss at 0.001 that bumps to 0.04 is x40 its best), so the jump must
also be large on the loss's own scale: above ``scale_rel`` of its early level.
"""

from __future__ import annotations

import math

import numpy as np

from autopilot._trends import finite_series, median, noise, relative, rolling_median, series
from autopilot.detectors._base import (
    check_above,
    check_at_least,
    check_int,
    is_dense,
    is_grad_norm,
    is_primary_loss,
    is_val,
    key_first,
    num,
    paired_vals,
)
from autopilot.diagnoses import Diagnosis, Evidence, Severity
from autopilot.summary import RunSummary, Window, Windows
from kernel.metric_names import is_loss

NOISE_Z = 3.0
"""A jump must also exceed this many per-point noise standard deviations (relative)."""
GRAD_SUSTAIN = 3
GRAD_NONFINITE_RUN = 10
"""Mixed precision skips a few overflowing steps routinely; this many in a row is not."""


class DivergenceDetector:
    """Non-finite losses (high), sustained loss jumps, sustained gradient-norm explosions.

    Args:
        factor: how far (a ratio, > 1) a loss must sit above its recent best to diverge.
        grad_explosion_factor: how far (> 1) a gradient norm must sit above its window's
            median to have exploded.
        min_points: the fewest finite points a gradient norm is judged on (>= 3).
        scale_rel: how far above its reference a jump must be, as a fraction of the loss's
            early level (>= 0).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "divergence"

    def __init__(
        self,
        *,
        factor: float = 2.0,
        grad_explosion_factor: float = 10.0,
        min_points: int = 5,
        scale_rel: float = 0.05,
    ) -> None:
        self.factor = check_above("factor", factor, 1.0)
        self.grad_explosion_factor = check_above(
            "grad_explosion_factor", grad_explosion_factor, 1.0
        )
        self.min_points = check_int("min_points", min_points, 3)
        self.scale_rel = check_at_least("scale_rel", scale_rel, 0.0)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        found: list[Diagnosis | None] = []
        losses = key_first(summary, [n for n in windows if is_loss(n)] + [summary.key_metric])
        for name in dict.fromkeys(n for n in losses if n in windows):
            if _nonfinite_count(summary, name):
                found.append(_nonfinite(name, windows[name], summary.step))
        for name in _jump_candidates(summary, windows):
            found.append(_jump(name, summary, windows[name], self.factor, self.scale_rel))
        for name in sorted(n for n in windows if is_grad_norm(n)):
            run = _nonfinite_count(summary, name) >= GRAD_NONFINITE_RUN
            found.append(self._explosion(name, summary.step, windows[name], run))
        found.append(damaged(summary, windows))
        return [d for d in found if d is not None]

    def _explosion(
        self, name: str, step: int, window: Window, nonfinite_run: bool
    ) -> Diagnosis | None:
        """``nonfinite_run``: the window may end in ``GRAD_NONFINITE_RUN`` non-finite values."""
        if nonfinite_run and not np.isfinite(series(window)[1][-GRAD_NONFINITE_RUN:]).any():
            message = f"{name} non-finite for the last {GRAD_NONFINITE_RUN} points"
            return _divergence(name, step, "high", message, {"nonfinite_run": GRAD_NONFINITE_RUN})
        _, values = finite_series(window)
        if len(values) < GRAD_SUSTAIN + self.min_points:
            return None
        base = median(values[:-GRAD_SUSTAIN])
        level = float(values[-GRAD_SUSTAIN:].min())  # one spike is not an explosion
        factor = self.grad_explosion_factor
        if base <= 0 or level <= factor * base:
            return None
        ratio = level / base
        message = (
            f"{name} exploded: {num(level)} for the last {GRAD_SUSTAIN} points, x{num(ratio)} "
            f"its window median {num(base)} (threshold x{num(factor)})"
        )
        evidence: Evidence = {"level": level, "median": base, "ratio": ratio, "factor": factor}
        severity: Severity = "high" if ratio >= factor**2 else "medium"
        return _divergence(name, step, severity, message, evidence)


def _nonfinite_count(summary: RunSummary, name: str) -> float:
    """Non-finite values in the window of ``name`` as the summary counted them (the summary
    saves converting the windows of healthy metrics); unknown counts as infinitely many."""
    m = summary.metrics.get(name)
    return math.inf if m is None else m.nonfinite


def _jump_candidates(summary: RunSummary, windows: Windows) -> list[str]:
    # A component (loss_kl, loss_aux) may rise by design while the total falls; when a total
    # loss is logged, a real divergence shows there. A validation loss with a train
    # counterpart rising is overfitting's business.
    losses = [n for n in windows if is_loss(n)]
    primaries = [n for n in losses if is_primary_loss(n)]
    names = set(primaries or losses) | ({summary.key_metric} & set(windows))
    return key_first(summary, sorted(names - paired_vals(summary)))


def _nonfinite(name: str, window: Window, step: int) -> Diagnosis | None:
    steps, values = series(window)
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if not count or (not bad[-1] and count < 2):
        return None  # one bad batch long recovered from is not worth an intervention
    latest = "nan" if np.isnan(values[-1]) else ("inf" if bad[-1] else "finite again")
    message = (
        f"{name} is {latest} at step {int(steps[-1])}: {count} non-finite of the last "
        f"{len(values)} points"
    )
    evidence: Evidence = {"nonfinite": count, "points": len(values), "latest_finite": not bad[-1]}
    return _divergence(name, step, "high" if bad[-1] else "medium", message, evidence)


def _jump(
    name: str, summary: RunSummary, window: Window, factor: float, scale_rel: float
) -> Diagnosis | None:
    steps, raw = finite_series(window)
    recent_n, smooth = (5, 9) if is_dense(steps) else ((3, 5) if is_val(name) else (5, 5))
    if len(raw) < recent_n + 3 * smooth:
        return None  # too little history to tell a jump from a streak of unlucky batches
    sign = 1.0 if summary.metrics[name].mode == "min" else -1.0
    scale = summary.metrics[name].scale
    logs = bool(raw.min() > 0)
    rel = relative(raw, scale)  # order-preserving, so medians and minima commute with it
    ref = sign * float(np.min(sign * rolling_median(rel[:-recent_n], smooth)))
    level = sign * float(np.min(sign * rel[-recent_n:]))  # the least bad recent point
    if logs:
        ref, level, needed = math.exp(ref), math.exp(level), math.log(factor)
        excess = sign * math.log(level / ref)
    else:
        ref, level = ref * scale, level * scale
        needed = ((factor - 1) if sign > 0 else (1 - 1 / factor)) * abs(ref) / scale
        excess = sign * (level - ref) / scale
    if excess <= max(needed, NOISE_Z * noise(rel[:-recent_n])):
        return None
    early = summary.metrics[name].early
    if early is not None and sign * (level - ref) <= scale_rel * abs(early):
        return None  # large as a ratio, small on the loss's own scale
    return _jump_diagnosis(name, summary.step, level, ref, factor, recent_n)


def _jump_diagnosis(
    name: str, step: int, level: float, ref: float, factor: float, recent_n: int
) -> Diagnosis:
    ratio = level / ref if ref else None
    high = ratio is not None and (ratio >= factor**2 or 0 < ratio <= 1 / factor**2)
    ratio_text = "" if ratio is None else f"x{num(ratio)}, "
    worse = "above" if level > ref else "below"
    threshold = f"x{num(factor)}" if level > ref else f"/{num(factor)}"
    message = (
        f"{name} {worse} its recent best for the last {recent_n} points: {num(level)} vs "
        f"{num(ref)} ({ratio_text}threshold {threshold})"
    )
    evidence: Evidence = {
        "level": level,
        "reference": ref,
        "ratio": ratio,
        "factor": factor,
        "points": recent_n,
    }
    return _divergence(name, step, "high" if high else "medium", message, evidence)


def _divergence(
    name: str, step: int, severity: Severity, message: str, evidence: Evidence
) -> Diagnosis:
    return Diagnosis(
        kind="divergence",
        metric=name,
        step=step,
        severity=severity,
        message=message,
        evidence=evidence,
    )


DAMAGE_LOST = 0.8
"""A network whose metric gave back this share of the progress it had made is damaged."""
DAMAGE_PROGRESS = 0.3
"""The progress first made must be at least this share of the early level to be lost."""
TRAIN_LOST = 0.5
"""A validation metric lost while its training counterpart holds is overfitting's: a dead
network loses both (this share for the training side)."""


def damaged(summary: RunSummary, windows: Windows) -> Diagnosis | None:
    """A damaged network: the key metric sits back near the level of the untrained model
    (accuracy near chance, a loss near its first values) after real progress, for its
    latest few points, and its training counterpart lost its progress too. A dead network
    is no overfitting and no plateau: a rewind to a good state is what can help.

    Example:
        >>> from autopilot.summary import summarize
        >>> steps = list(range(0, 600, 20))
        >>> loss = [2.3 - 0.07 * i for i in range(30)]
        >>> loss[-5:] = [2.3, 2.31, 2.29, 2.3, 2.3]
        >>> windows = {"train/loss": [steps, loss]}
        >>> s = summarize(windows, {}, step=580, key_metric="train/loss", key_mode="min",
        ...               early={"train/loss": loss[:5]})
        >>> damaged(s, windows).evidence["lost"]
        1.0
    """
    key = summary.key_metric
    lost = _lost(summary, windows, key)
    if lost is None or lost[0] < DAMAGE_LOST:
        return None
    share, early, best, level = lost
    train = next((g.train for g in summary.gaps if g.val == key), None)
    if train is not None:
        train_lost = _lost(summary, windows, train)
        if train_lost is None or train_lost[0] < TRAIN_LOST:
            return None
    best_step = summary.metrics[key].best_step
    message = (
        f"{key} is back at {num(level)}, near its untrained level {num(early)}: it gave back "
        f"{share:.0%} of the progress to its best {num(best)} (step {best_step}); the network "
        "looks damaged, and a rewind to a good state can help where an lr change cannot"
    )
    evidence: Evidence = {
        "damaged": True,
        "lost": round(share, 3),
        "early": early,
        "best": best,
        "best_step": best_step,
        "level": level,
    }
    return _divergence(key, summary.step, "high", message, evidence)


def _lost(
    summary: RunSummary, windows: Windows, name: str
) -> tuple[float, float, float, float] | None:
    """``(share of progress lost, early, best, recent level)`` of ``name``, or None."""
    m = summary.metrics.get(name)
    if m is None or m.early is None or m.best is None or name not in windows:
        return None
    steps, values = finite_series(windows[name])
    recent = 3 if is_val(name) else 5  # as sustained as a jump must be
    if len(values) < recent + 2 or m.best_step is None or m.best_step >= steps[-recent]:
        return None
    sign = 1.0 if m.mode == "min" else -1.0
    progress = sign * (m.early - m.best)
    if progress <= DAMAGE_PROGRESS * abs(m.early):
        return None
    level = float(values[-recent:].min() if sign > 0 else values[-recent:].max())
    share = min(1.0, sign * (level - m.best) / progress)
    return share, m.early, m.best, level
