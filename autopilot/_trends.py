"""Numerical kernels of the summary and the detectors: trends, noise and gaps of windows.

``window_stats`` packs every metric into one padded array and fits all of them at once
(one numpy call per statistic instead of one per metric: summarising 20 metrics stays far
under a millisecond). The 1-D helpers serve the detectors, which look at a few series only.
Every result is a plain Python float (or ``None`` where it is undefined), never numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Series = tuple[np.ndarray, np.ndarray]
"""``(steps, values)`` of one metric."""
_MAD_TO_STD = 1.4826


@dataclass(frozen=True, kw_only=True)
class Stats:
    """Window statistics, one entry per window; slopes are relative change per 100 steps,
    ``None`` where undefined (too few finite points)."""

    n: list[int]
    nonfinite: list[int]
    first_step: list[int | None]
    last_step: list[int | None]
    last: list[float | None]
    scale: list[float]
    span: list[float]
    slope: list[float | None]
    slope_se: list[float | None]
    short_slope: list[float | None]
    volatility: list[float | None]
    window_min: list[tuple[float, int] | None]
    window_max: list[tuple[float, int] | None]


@dataclass(frozen=True, kw_only=True)
class Gap:
    gap: float | None
    slope: float | None
    slope_se: float | None


@dataclass(frozen=True, kw_only=True)
class Packed:
    """Windows of several metrics as one padded array each for steps and values; row ``i``
    holds ``lens[i]`` points, ``finite`` marks the finite ones."""

    steps: np.ndarray
    values: np.ndarray
    finite: np.ndarray
    lens: np.ndarray

    def row(self, i: int) -> Series:
        """``(steps, values)`` of row ``i``'s finite points, sorted by step."""
        keep = self.finite[i]
        return _by_step(self.steps[i][keep], self.values[i][keep])


def pack(windows: list[list[list[float]]]) -> Packed:
    """Rows of ``[steps, values]`` windows, padded to the longest: one list-to-array copy per
    row and column, the only per-point work of a summary."""
    lens = np.array([len(w[1]) if w else 0 for w in windows], dtype=int)
    width = max(int(lens.max(initial=0)), 1)
    steps, values = np.zeros((len(windows), width)), np.full((len(windows), width), np.nan)
    previous: list[float] | None = None
    for i, window in enumerate(windows):
        if not window:
            previous = None
            continue
        n = lens[i]
        # metrics logged together have equal steps: comparing lists costs less than converting
        steps[i, :n] = steps[i - 1, :n] if window[0] == previous else window[0]
        values[i, :n], previous = window[1], window[0]
    present = np.arange(width) < lens[:, None]
    return Packed(steps=steps, values=values, finite=present & np.isfinite(values), lens=lens)


def window_stats(packed: Packed, min_points: int) -> Stats:
    """Statistics of each packed window, in order."""
    steps, values, finite, lens = packed.steps, packed.values, packed.finite, packed.lens
    n = finite.sum(axis=1)
    y = np.where(finite, values, 0.0)
    scale = _scale(np.where(finite, np.abs(values), np.inf), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope, se, xc, resid, sxx = _linear(steps, y, finite)
        vol = _quadratic_residual(xc, resid, sxx, finite) / scale
        short = _linear(steps, y, finite & _latest(finite, n, min_points))[0]
    enough = n >= min_points
    rows, last = np.arange(len(lens)), np.maximum(lens - 1, 0)
    lo = np.where(finite, values, np.inf).argmin(1)
    hi = np.where(finite, values, -np.inf).argmax(1)
    span = np.where(finite, steps, -np.inf).max(1) - np.where(finite, steps, np.inf).min(1)
    return Stats(
        n=n.tolist(),
        nonfinite=(lens - n).tolist(),
        first_step=_ints(np.where(lens > 0, steps[:, 0], np.nan)),
        last_step=_ints(np.where(lens > 0, steps[rows, last], np.nan)),
        last=_floats(np.where(lens > 0, values[rows, last], np.nan)),
        scale=scale.tolist(),
        span=np.where(n > 0, span, 0.0).tolist(),
        slope=_floats(slope * 100 / scale, enough),
        slope_se=_floats(se * 100 / scale, enough),
        short_slope=_floats(short * 100 / scale, enough),
        volatility=_floats(vol, enough),
        window_min=_extremes(values[rows, lo], steps[rows, lo], n),
        window_max=_extremes(values[rows, hi], steps[rows, hi], n),
    )


def _floats(array: np.ndarray, keep: np.ndarray | None = None) -> list[float | None]:
    """Finite entries as floats, the rest (and those not in ``keep``) as ``None``."""
    if keep is not None:
        array = np.where(keep, array, np.nan)
    return [v if math.isfinite(v) else None for v in array.tolist()]


def _ints(array: np.ndarray) -> list[int | None]:
    return [int(v) if math.isfinite(v) else None for v in array.tolist()]


def _extremes(
    values: np.ndarray, steps: np.ndarray, n: np.ndarray
) -> list[tuple[float, int] | None]:
    return [
        (v, int(s)) if k else None
        for v, s, k in zip(values.tolist(), steps.tolist(), n.tolist(), strict=True)
    ]


def _scale(abs_values: np.ndarray, n: np.ndarray) -> np.ndarray:
    # Median |value|, floored so that a metric crossing zero or stuck at 0 still divides.
    ordered, rows = np.sort(abs_values, axis=1), np.arange(len(n))
    median = (ordered[rows, np.maximum((n - 1) // 2, 0)] + ordered[rows, n // 2]) / 2
    scale = np.maximum(median, 1e-3 * ordered[rows, np.maximum(n - 1, 0)])
    return np.where(
        (n > 0) & np.isfinite(scale) & (scale > 1e-12), scale, np.where(n > 0, 1e-12, 1.0)
    )


def _linear(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row-wise least squares of ``y`` on ``x`` over ``mask``: slope, its standard error,
    the centred x, the residuals (0 outside the mask) and the sum of squares of x."""
    w = mask.astype(float)
    n = w.sum(axis=1)
    xc = (x - ((w * x).sum(1) / n)[:, None]) * w
    ym = (w * y).sum(1) / n
    sxx = (xc * xc).sum(1)
    slope = (xc * y).sum(1) / sxx
    resid = (y - ym[:, None] - slope[:, None] * xc) * w
    se = np.sqrt((resid * resid).sum(1) / (n - 2) / sxx)
    return slope, se, xc, resid, sxx


def _quadratic_residual(
    xc: np.ndarray, resid: np.ndarray, sxx: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    # Residual std around a quadratic trend: a smoothly curving (e.g. exponential) decline
    # is trend, not noise. The quadratic term is made orthogonal to 1 and x, so it is fitted
    # to the linear residuals alone.
    n = mask.sum(axis=1)
    q = (xc * xc - ((xc * xc).sum(1) / n)[:, None]) * mask
    q -= ((q * xc).sum(1) / sxx)[:, None] * xc
    coef = (q * resid).sum(1) / (q * q).sum(1)
    left = resid - np.nan_to_num(coef)[:, None] * q
    return np.sqrt((left * left).sum(1) / (n - 3))


def _latest(finite: np.ndarray, n: np.ndarray, min_points: int) -> np.ndarray:
    """The latest quarter of each row's finite points (at least ``min_points``)."""
    from_end = np.cumsum(finite[:, ::-1], axis=1)[:, ::-1]
    k = np.minimum(n, np.maximum(np.ceil(n / 4), min_points))
    return from_end <= k[:, None]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def series(window: list[list[float]]) -> Series:
    """``(steps, values)`` of a ``[steps, values]`` window, non-finite values included."""
    if not window:
        return np.zeros(0), np.zeros(0)
    return np.asarray(window[0], dtype=float), np.asarray(window[1], dtype=float)


def finite_series(window: list[list[float]]) -> Series:
    """``(steps, values)`` of the finite points, sorted by step."""
    steps, values = series(window)
    keep = np.isfinite(values)
    return _by_step(steps[keep], values[keep])


def _by_step(steps: np.ndarray, values: np.ndarray) -> Series:
    if len(steps) > 1 and bool((np.diff(steps) < 0).any()):  # a resumed run repeats steps
        order = np.argsort(steps, kind="stable")
        return steps[order], values[order]
    return steps, values


def relative(values: np.ndarray, scale: float) -> np.ndarray:
    """``values`` in relative units: their log when all are positive (a minibatch loss's
    noise is multiplicative and heavy-tailed; in logs it is symmetric), else ``values/scale``.
    Either way a difference of 0.01 means about 1% of the metric's level."""
    if len(values) and float(values.min()) > 0:
        return np.log(values)
    return values / scale


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """``(slope, standard error)`` per unit of ``x``; ``None`` under 3 points or no spread.

    This and every other line fit of the autopilot (the summary's, the detectors', the
    effect baseline's) is ``_linear``: one least-squares formula, one place.
    """
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope, se, *_ = _one_row(x, y)
    return float(slope[0]), float(se[0])


def line_at(x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float]:
    """The least-squares line through ``(x, y)``: its value at ``at`` and its slope. Under 3
    points, the last value and no slope; with no spread of ``x``, the mean and no slope."""
    if len(x) < 3:
        return float(y[-1]), 0.0
    fit = linear_fit(x, y)
    slope = 0.0 if fit is None else fit[0]
    return float(y.mean() + slope * (at - x.mean())), slope


def _one_row(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """``_linear`` of one series: its outputs as one-row arrays."""
    rows = np.asarray(x, dtype=float)[None, :], np.asarray(y, dtype=float)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return _linear(*rows, np.ones(rows[0].shape, dtype=bool))


def median(values: np.ndarray) -> float:
    """Median of a non-empty 1-D array of finite values: ``np.median`` by one partition, at
    a fifth of its cost on a window-sized array (the detectors take a dozen per tick)."""
    return float(_middle(values[None, :])[0])


def _middle(rows: np.ndarray) -> np.ndarray:
    """Row-wise medians of a 2-D array of finite values, as ``np.median(rows, axis=1)``."""
    k = rows.shape[1] // 2
    if rows.shape[1] % 2:
        return np.partition(rows, k, axis=1)[:, k]
    part = np.partition(rows, (k - 1, k), axis=1)
    return (part[:, k - 1] + part[:, k]) / 2


def noise(values: np.ndarray) -> float:
    """Robust per-point noise: the MAD of second differences, as a standard deviation.

    Second differences cancel a trend and most of a smooth curve, and the median ignores a
    jump; independent noise of std s gives about s.
    """
    if len(values) < 4:
        return 0.0
    second = np.diff(values, 2)
    mad = median(np.abs(second - median(second)))
    return _MAD_TO_STD * mad / math.sqrt(6)


def rolling_median(values: np.ndarray, k: int) -> np.ndarray:
    """Medians of every ``k`` consecutive values (all of them when shorter than ``k``)."""
    if len(values) <= k:
        return np.array([median(values)]) if len(values) else values
    return _middle(np.lib.stride_tricks.sliding_window_view(values, k))


def quadratic_residual_std(x: np.ndarray, y: np.ndarray) -> float | None:
    """Std of ``y`` around its least-squares quadratic in ``x``; ``None`` under 4 points."""
    if len(x) < 4 or np.ptp(x) == 0:
        return None
    _, _, xc, resid, sxx = _one_row(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = _quadratic_residual(xc, resid, sxx, np.ones(xc.shape, dtype=bool))
    return _finite(float(std[0]))


def gap_trend(train: Series, val: Series, scale: float) -> Gap:
    """``val - train`` relative to ``scale``: latest, and its slope per 100 steps. Both are
    ``(steps, values)`` of finite points sorted by step.

    The train metric is averaged within half a validation interval of each validation step
    (the train side is usually dense and noisy, the validation side sparse).
    """
    (ts, tv), (vs, vv) = train, val
    if not len(ts) or not len(vs):
        return Gap(gap=None, slope=None, slope_se=None)
    half = max(1.0, float(vs[-1] - vs[0]) / (len(vs) - 1) / 2) if len(vs) > 1 else 1.0
    lo = np.searchsorted(ts, vs - half, "left")
    hi = np.searchsorted(ts, vs + half, "right")
    ok = hi > lo
    if not ok.any():
        return Gap(gap=_finite((vv[-1] - tv[-1]) / scale), slope=None, slope_se=None)
    sums = np.concatenate([[0.0], np.cumsum(tv)])
    lo, hi = lo[ok], hi[ok]
    gaps = (vv[ok] - (sums[hi] - sums[lo]) / (hi - lo)) / scale
    fit = linear_fit(vs[ok], gaps)
    slope, se = (None, None) if fit is None else (fit[0] * 100, fit[1] * 100)
    return Gap(gap=_finite(gaps[-1]), slope=slope, slope_se=se)
