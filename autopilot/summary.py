"""The compressed view of a run that the LLM and the detectors read instead of raw values.

Per metric: where it is, its best, and its trend over the window, all relative to the
metric's own scale so that a loss of 2.3 and a learning rate of 1e-4 read alike. Pairs of a
train metric and its validation counterpart also get their gap. Everything here is JSON-able
(it lives in the graph state and in decision records).

A metric's window is columnar, ``[steps, values]`` (two parallel lists, oldest first): the
checkpointed state then holds two lists per metric rather than one per point.

Example:
    >>> steps = list(range(0, 400, 20))
    >>> windows = {"val/loss": [steps, [1.0 - 0.001 * s for s in steps]]}
    >>> s = summarize(windows, {"val/loss": [0.62, 380]}, step=380,
    ...               key_metric="val/loss", key_mode="min")
    >>> s.metrics["val/loss"].direction, round(s.metrics["val/loss"].slope, 3)
    ('improving', -0.123)
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot import _trends
from autopilot.summary_table import render_table as render_table  # its home; read here too
from kernel.metric_names import MetricMode, metric_mode, metric_pairs

Direction = Literal["improving", "worsening", "flat", "noisy"]
Window = list[list[float]]
"""``[steps, values]`` of one metric: two lists of equal length, oldest point first."""
Windows = dict[str, Window]
Best = dict[str, list[float]]
Early = dict[str, list[float]]
"""Per metric its first ``EARLY_POINTS`` finite values over the whole run segment: the
level a loss started from, which the window of a long run no longer holds."""
Peak = dict[str, list[float]]
"""Per metric ``[largest_value, step, latest_value, largest_drop]`` over the whole run
segment: a learning rate's peak, which its decay is measured against, and its largest fall
between two logged points as a fraction of the peak then (a collapse, not a schedule)."""
EARLY_POINTS = 5
_CADENCE_POINTS = 33
"""The cadence is the median spacing of a metric's latest points (its current cadence)."""

_NOISY_T = 2.0
"""A slope under this many standard errors is indistinguishable from noise."""
_NOISY_VOL = 0.05
_FLAT_CHANGE = 0.01
"""Less relative change than this across the whole window reads as flat."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class MetricSummary(_Model):
    """One metric over its window. Slopes are relative change per 100 steps (``-0.02``: the
    metric falls by 2% of its scale every 100 steps); ``None`` with too few finite points."""

    name: str
    mode: MetricMode
    n: int = Field(ge=0, description="finite points in the window")
    first_step: int | None = None
    last_step: int | None = None
    last: float | None = Field(default=None, description="None when the latest is non-finite")
    best: float | None = Field(default=None, description="over the whole run")
    best_step: int | None = None
    steps_since_best: int | None = None
    scale: float = Field(default=1.0, gt=0, description="median |value| in the window")
    slope: float | None = None
    short_slope: float | None = Field(default=None, description="over the latest quarter")
    volatility: float | None = Field(default=None, description="noise around the trend / scale")
    direction: Direction | None = None
    nonfinite: int = Field(default=0, ge=0)
    early: float | None = Field(default=None, description="median of the run's first values")
    peak: float | None = Field(default=None, description="largest value over the run")
    largest_drop: float | None = Field(
        default=None, description="largest fall between two points, a fraction of the peak"
    )
    cadence: float | None = Field(default=None, description="median steps between points")


class GapSummary(_Model):
    """A train metric and its validation counterpart. ``gap`` is ``val - train`` relative to
    the validation metric's scale; ``widening`` means it moves the overfitting way."""

    train: str
    val: str
    mode: MetricMode
    gap: float | None = None
    gap_slope: float | None = Field(default=None, description="per 100 steps, relative")
    widening: bool = False


class RunSummary(_Model):
    """All metrics at ``step``, with the key metric named."""

    step: int
    key_metric: str
    key_mode: MetricMode
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)
    gaps: list[GapSummary] = Field(default_factory=list)
    max_steps: int | None = Field(default=None, description="the run's planned length")
    loss_weights: dict[str, float] = Field(
        default_factory=dict, description="per loss term its weight (kernel.json's loss.<term>)"
    )

    @property
    def progress(self) -> float | None:
        """How far through its planned length the run is (``None``: length unknown)."""
        return None if not self.max_steps else self.step / self.max_steps


def summarize(
    windows: Windows,
    best: Best,
    *,
    step: int,
    key_metric: str,
    key_mode: MetricMode,
    min_points: int = 5,
    early: Early | None = None,
    peak: Peak | None = None,
    max_steps: int | None = None,
    loss_weights: dict[str, float] | None = None,
) -> RunSummary:
    """Summarise every metric's window (vectorised over metrics: well under 1 ms for 20x200).

    Args:
        windows: per metric its latest points as ``[steps, values]``, non-finite values
            included.
        best: per metric ``[best_value, best_step]`` over the whole run.
        step: the run's current step.
        key_metric: the metric the autopilot optimises.
        key_mode: its direction (it overrides the name-based one).
        min_points: fewer finite points than this leave trends ``None``.
        early: per metric its first finite values over the run (``Early``).
        peak: per metric its largest value over the run (``Peak``).
        max_steps: the run's planned length, when the training loop published it.
        loss_weights: per loss term its weight (the kernel's ``loss.<term>`` knobs).
    """
    names = [key_metric] if key_metric in windows else []
    names += sorted(n for n in windows if n != key_metric)
    modes = [key_mode if n == key_metric else metric_mode(n) for n in names]
    packed = _trends.pack([windows[n] for n in names])
    stats = _trends.window_stats(packed, min_points)
    early, peak = early or {}, peak or {}
    metrics = {
        name: _metric(
            name,
            mode,
            stats,
            i,
            best.get(name) if mode == metric_mode(name) else None,
            step,
            early=_median_of(early.get(name)),
            peak=peak.get(name),
            cadence=_cadence(windows[name][0]),
        )
        for i, (name, mode) in enumerate(zip(names, modes, strict=True))
    }
    rows = {name: i for i, name in enumerate(names)}
    gaps = [
        _gap(metrics[val], train, packed.row(rows[train]), packed.row(rows[val]))
        for train, val in metric_pairs(names)
    ]
    return RunSummary(
        step=step,
        key_metric=key_metric,
        key_mode=key_mode,
        metrics=metrics,
        gaps=gaps,
        max_steps=max_steps,
        loss_weights=dict(loss_weights or {}),
    )


def _drop(peak: list[float] | None) -> float | None:
    return float(peak[3]) if peak is not None and len(peak) >= 4 else None


def _median_of(values: list[float] | None) -> float | None:
    """The level a metric started from: the median of its first three finite values."""
    return float(statistics.median(values[:3])) if values else None


def _cadence(steps: list[float]) -> float | None:
    """The median spacing of a metric's latest logged steps (``None`` below two points)."""
    if len(steps) < 2:
        return None
    latest = steps[-_CADENCE_POINTS:]
    gaps = sorted(b - a for a, b in zip(latest, latest[1:], strict=False))
    half = len(gaps) // 2
    return float(gaps[half] if len(gaps) % 2 else (gaps[half - 1] + gaps[half]) / 2)


def _metric(
    name: str,
    mode: MetricMode,
    stats: _trends.Stats,
    i: int,
    run_best: list[float] | None,
    step: int,
    *,
    early: float | None,
    peak: list[float] | None,
    cadence: float | None,
) -> MetricSummary:
    best_value, best_step = _best(mode, stats, i, run_best)
    volatility = stats.volatility[i]
    return MetricSummary(
        early=early,
        peak=None if peak is None else peak[0],
        largest_drop=_drop(peak),
        cadence=cadence,
        name=name,
        mode=mode,
        n=stats.n[i],
        first_step=stats.first_step[i],
        last_step=stats.last_step[i],
        last=stats.last[i],
        best=best_value,
        best_step=best_step,
        steps_since_best=None if best_step is None else max(0, step - best_step),
        scale=stats.scale[i],
        slope=stats.slope[i],
        short_slope=stats.short_slope[i],
        volatility=volatility,
        direction=_direction(stats.slope[i], stats.slope_se[i], volatility, stats.span[i], mode),
        nonfinite=stats.nonfinite[i],
    )


def _best(
    mode: MetricMode, stats: _trends.Stats, i: int, run_best: list[float] | None
) -> tuple[float | None, int | None]:
    # The observer keeps bests by the name's direction; a key_mode that disagrees, or a
    # missing entry, falls back to the window's own best.
    if run_best is not None and math.isfinite(run_best[0]):
        return float(run_best[0]), int(run_best[1])
    pick = stats.window_min[i] if mode == "min" else stats.window_max[i]
    return (None, None) if pick is None else pick


def _direction(
    slope: float | None, se: float | None, vol: float | None, span: float, mode: MetricMode
) -> Direction | None:
    if slope is None or se is None or vol is None:
        return None
    if abs(slope) < _NOISY_T * se:
        return "noisy" if vol >= _NOISY_VOL else "flat"
    if abs(slope) * span / 100 < _FLAT_CHANGE:
        return "flat"
    return "improving" if (slope < 0) == (mode == "min") else "worsening"


def _gap(
    val: MetricSummary, train: str, train_row: _trends.Series, val_row: _trends.Series
) -> GapSummary:
    mode = val.mode
    g = _trends.gap_trend(train_row, val_row, val.scale)
    worse = None if g.slope is None else (g.slope if mode == "min" else -g.slope)
    widening = worse is not None and g.slope_se is not None and worse > 0 and worse >= g.slope_se
    return GapSummary(
        train=train, val=val.name, mode=mode, gap=g.gap, gap_slope=g.slope, widening=widening
    )


def summary_hash(summary: RunSummary) -> str:
    """12 hex chars of sha256 over canonical JSON (floats to 6 significant digits, so that
    the last bits of a float sum on another machine do not change the hash)."""
    canonical = json.dumps(
        _rounded(summary.model_dump(mode="json")), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _rounded(value: Any) -> Any:
    # exact type checks: the JSON dump holds only dict, list, str, int, float, bool, None
    kind = type(value)
    if kind is float:
        return float(f"{value:.6g}")
    if kind is dict:
        return {k: _rounded(v) for k, v in value.items()}
    if kind is list:
        return [_rounded(v) for v in value]
    return value
