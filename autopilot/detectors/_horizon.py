"""What the detectors know of a run beyond its curves: its planned length, each metric's
evaluation cadence, and the learning-rate schedule.

A run that published its planned length (``Kernel(..., max_steps=)``; the Hugging Face and
Lightning adapters pass their trainer's) is judged in evaluations and in fractions of that
length: a patience of 20 % of the run and at least 4 evaluations holds from a 200-step
fine-tune to a 100k-step pre-training run. A run of unknown length falls back to fixed step
counts (``plateau_patience_steps``...), never shorter than the evaluations asked for.

Example:
    >>> patience(max_steps=100_000, cadence=1000.0, evals=4, frac=0.2, steps=300)
    20000
    >>> patience(max_steps=250, cadence=25.0, evals=4, frac=0.2, steps=300)
    100
    >>> patience(max_steps=None, cadence=10.0, evals=4, frac=0.2, steps=300)
    300
"""

from __future__ import annotations

import math

import numpy as np

from autopilot.summary import MetricSummary, RunSummary, Windows
from kernel.update_ratio import METRIC as UPDATE_RATIO

LR_NAME = "lr"
SLOW_PROGRESS = 0.3
"""A key metric that has come less than this share of the way from its early level
(relatively) has made little progress: with a tiny update ratio the lr is too low, with a
large one too high."""
GRADUAL_DROP = 0.25
"""A decay drops the lr by at most this fraction of its peak between two logged points; a
bigger drop is a collapse (a bug, or a person's change), whose flat tail is a plateau."""


def patience(
    *, max_steps: int | None, cadence: float | None, evals: int, frac: float, steps: int
) -> int:
    """The steps a detector waits: ``evals`` evaluations at the metric's ``cadence`` and
    ``frac`` of ``max_steps``, whichever is longer; ``steps`` (and the evaluations) when the
    run's length is unknown."""
    by_evals = evals * (cadence or 0.0)
    if max_steps:
        return max(1, math.ceil(max(by_evals, frac * max_steps)))
    return max(steps, math.ceil(by_evals))


def evals_after(window_steps: np.ndarray, step: int | None) -> int:
    """How many of a metric's logged points came after ``step``."""
    if step is None:
        return 0
    return int(len(window_steps) - np.searchsorted(window_steps, step, side="right"))


def collapsed_lr(summary: RunSummary, frac: float) -> float | None:
    """The lr as a fraction of its peak when it fell below ``frac`` of that peak with a drop
    bigger than any schedule's step (a bug, or a change that overshot): a plateau then calls
    for more lr, not less; ``None`` otherwise (no lr logged, above ``frac``, or decayed
    gradually).

    Example:
        >>> from autopilot.summary import MetricSummary, RunSummary
        >>> lr = MetricSummary(name="lr", mode="min", n=9, last=1e-6, peak=1e-3,
        ...                    largest_drop=0.999)
        >>> collapsed_lr(RunSummary(step=9, key_metric="val/loss", key_mode="min",
        ...                         metrics={"lr": lr}), 0.1)
        0.001
    """
    lr = summary.metrics.get(LR_NAME)
    if lr is None or lr.last is None or not lr.peak or lr.peak <= 0 or lr.largest_drop is None:
        return None
    ratio = lr.last / lr.peak
    return float(ratio) if ratio <= frac and lr.largest_drop > GRADUAL_DROP else None


def lr_before_drop(windows: Windows) -> float | None:
    """The lr just before the largest one-step fall in its window (a collapse's cause is
    there to undo); ``None`` without an lr window or a fall.

    Example:
        >>> lr_before_drop({"lr": [[1, 2, 3, 4], [0.01, 0.01, 1e-5, 1e-5]]})
        0.01
    """
    lr = windows.get(LR_NAME)
    if not lr or len(lr[1]) < 2:
        return None
    values = np.asarray(lr[1], dtype=float)
    before, after = values[:-1], values[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        falls = np.where((before > 0) & np.isfinite(after), 1.0 - after / before, 0.0)
    i = int(np.argmax(falls))
    return float(before[i]) if falls[i] > GRADUAL_DROP else None


def annealed_lr(summary: RunSummary, windows: Windows, frac: float) -> float | None:
    """The lr as a fraction of its peak when a schedule has decayed it gradually below
    ``frac`` of that peak (a flat tail is then expected); ``None`` otherwise (no lr logged,
    still near its peak, or collapsed in one drop)."""
    lr = summary.metrics.get(LR_NAME)
    if lr is None or lr.last is None or not lr.peak or lr.peak <= 0:
        return None
    ratio = lr.last / lr.peak
    if ratio > frac or lr.largest_drop is None:
        return None
    return float(ratio) if lr.largest_drop <= GRADUAL_DROP else None


def progress_from_early(key: MetricSummary) -> float | None:
    """How far ``key`` has come from its early level, as a fraction of that level (its
    direction counted: 0.3 is 30 % better); ``None`` without an early or a latest value.

    Example:
        >>> progress_from_early(MetricSummary(name="val/loss", mode="min", n=9, early=2.0,
        ...                                   last=1.5))
        0.25
    """
    if key.early is None or key.last is None or key.early == 0:
        return None
    sign = 1.0 if key.mode == "min" else -1.0
    return sign * (key.early - key.last) / abs(key.early)


def update_ratio_now(summary: RunSummary, windows: Windows) -> float | None:
    """The latest update ratio (``train/update_ratio``, measured every few hundred steps)
    scaled by the lr in force now over the lr when it was measured: one step's move grows
    with the lr (for Adam and SGD alike), so a ratio from before an lr raise is not read as
    still tiny. ``None`` when no ratio is logged.

    Example:
        >>> from autopilot.summary import summarize
        >>> windows = {"train/update_ratio": [[200], [4e-4]], "lr": [[200, 210], [1e-4, 4e-4]]}
        >>> s = summarize(windows, {}, step=210, key_metric="lr", key_mode="min")
        >>> round(update_ratio_now(s, windows), 6)
        0.0016
    """
    ratio = summary.metrics.get(UPDATE_RATIO)
    if ratio is None or ratio.last is None or ratio.last_step is None:
        return None
    lr = windows.get(LR_NAME)
    if not lr or not lr[0]:
        return float(ratio.last)
    steps, values = lr
    pairs = zip(reversed(steps), reversed(values), strict=True)
    then = next((v for s, v in pairs if s <= ratio.last_step), None)
    now = values[-1]
    if then is None or not then > 0 or not math.isfinite(now):
        return float(ratio.last)
    return float(ratio.last * now / then)
