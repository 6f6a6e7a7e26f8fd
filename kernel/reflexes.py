"""Reflexes: the kernel's own, in-process answer to a loss that blows up.

A watcher process sees a spike only after a flush, a poll and a tick (tens of steps on a fast
loop), and by then a few updates at a huge learning rate have killed the network: no lr
change brings it back. The kernel sees every logged value as it is logged, so it checks the
cheap, unambiguous signs itself, at ``Kernel.log``:

- a non-finite training loss (any logged metric whose name says loss, validation ones aside);
- a training loss above ``loss_factor`` times its robust running level (the median of its
  last ``window`` finite readings) and above the level of the untrained model (the median of
  its first ``warmup`` readings): a loss worse than where training started means the progress
  is gone, whatever the loss's scale;
- a gradient norm (``grad/norm``) above ``grad_factor`` times its running median and above
  its early level (a memorised training set's norms sit near zero, so a normal batch is
  hundreds of times their median), or non-finite ``nonfinite_grad_repeats`` times in a row
  (one non-finite norm is what a mixed precision ``GradScaler`` makes when it skips a step,
  which is healthy).

On a trip the kernel rewinds, at the same step's safe point, to the newest snapshot that the
readings vouch for (``Trip.vouched_step``): the loss logged at step ``t`` was computed
before the update of step ``t``, so a normal reading at step ``r`` vouches for the updates
up to ``r - 1``, and the first abnormal one convicts the update after the last normal reading:
with a loss logged at every step, a trip at ``t`` rewinds to a snapshot from ``t - 2`` or
earlier.

``Reflex`` is pure bookkeeping (no torch, no files): the kernel feeds it, and the evals feed it
recorded curves to count trips on healthy runs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kernel.metric_names import GRAD_NORM, is_loss, split_role

_LARGEST = 1.7976931348623157e308
"""The largest float: a reading below it (and above minus it) is finite."""
TripCause = Literal["nonfinite", "spike"]


class Trip(BaseModel):
    """What tripped a reflex: recorded in the ledger row of its rewind (``reflex``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step: int
    metric: str
    value: float | None = None
    """The reading (None when it was not finite: JSON has no literal for it)."""
    level: float | None = None
    """The running level it was judged against (None for a non-finite reading)."""
    cause: TripCause
    elsewhere: bool = False
    """Distributed: the trip was another rank's (its metric and value are not known here:
    the ranks agree on whether, not on what)."""
    vouched_step: int | None = None
    """The newest step whose snapshot the readings vouch for: one before the last normal
    reading (None: there was none, so no snapshot is known good)."""

    def describe(self) -> str:
        if self.elsewhere:
            return f"a reflex tripped on another rank at step {self.step}"
        if self.cause == "nonfinite":
            return f"{self.metric} was not finite at step {self.step}"
        assert self.value is not None and self.level
        return (
            f"{self.metric} = {self.value:.4g} at step {self.step}, "
            f"{self.value / self.level:.0f}x its running level {self.level:.4g}"
        )


@dataclass(frozen=True, kw_only=True)
class ReflexSettings:
    """Thresholds of the reflexes (``KernelSettings`` holds the kernel's copy)."""

    loss_factor: float = 10.0
    grad_factor: float = 100.0
    """0 turns the gradient-norm spike check off (non-finite norms are still watched)."""
    warmup: int = 20
    """Readings of a series before its level is trusted."""
    window: int = 64
    nonfinite_grad_repeats: int = 3

    def __post_init__(self) -> None:
        if self.loss_factor <= 1:
            raise ValueError(f"reflex loss_factor must be > 1, got {self.loss_factor}")
        if self.grad_factor != 0 and self.grad_factor <= 1:
            raise ValueError(f"reflex grad_factor must be > 1 (0: off), got {self.grad_factor}")
        if self.warmup < 1 or self.window < self.warmup:
            raise ValueError(
                f"reflex warmup must be >= 1 and window >= warmup, got {self.warmup}, {self.window}"
            )
        if self.nonfinite_grad_repeats < 1:
            raise ValueError(
                f"nonfinite_grad_repeats must be >= 1, got {self.nonfinite_grad_repeats}"
            )


class _Level:
    """The robust running level of one series: the median of its recent finite readings,
    recomputed every few readings, and the median of its first readings."""

    REFRESH = 8

    def __init__(self, warmup: int, window: int, factor: float) -> None:
        self.warmup, self.factor = warmup, factor
        self.recent: deque[float] = deque(maxlen=window)
        self.first: list[float] = []
        self.early: float | None = None
        self.level: float | None = None
        self.threshold = _LARGEST
        """A finite reading below this is normal (the fast path of ``Reflex.watch``)."""
        self._since = 0

    def add(self, value: float) -> None:
        self.recent.append(value)
        if self.early is None:
            self.first.append(value)
            if len(self.first) >= self.warmup:
                self.early = _median(self.first)
                self.first = []
        self._since += 1
        if self.early is not None and (self.level is None or self._since >= self.REFRESH):
            self.level = _median(self.recent)
            self._since = 0
            spikes = self.level > 0 and self.factor > 0
            self.threshold = max(self.factor * self.level, self.early) if spikes else _LARGEST


class Reflex:
    """Watches logged values for a trip; see the module docstring for the rules.

    Example:
        >>> reflex = Reflex(ReflexSettings(warmup=3, window=8))
        >>> [reflex.watch(s, {"train/loss": v}) for s, v in enumerate((2.3, 2.2, 2.1, 0.5))]
        [None, None, None, None]
        >>> reflex.watch(4, {"train/loss": 40.0}).describe()
        'train/loss = 40 at step 4, 18x its running level 2.2'
        >>> reflex.watch(4, {"train/loss": 40.0}).vouched_step  # the update of step 3 did it
        2
    """

    def __init__(self, settings: ReflexSettings | None = None) -> None:
        self.settings = settings or ReflexSettings()
        self._levels: dict[str, _Level] = {}
        self._watched: dict[str, bool] = {}
        self._bad_grads = 0
        self._last_normal: int | None = None
        """The latest step whose watched readings were all normal."""

    def watch(self, step: int, metrics: Mapping[str, Any]) -> Trip | None:
        """Take the readings of ``step``; the first trip among them, or None."""
        trip, watched_any = None, False
        for name, raw in metrics.items():
            watched = self._watched.get(name)
            if watched is None:
                watched = self._watched[name] = _is_watched(name)
            if not watched:
                continue
            value = _number(raw)
            if value is None:
                continue
            found = self._judge(step, name, value)
            if trip is None and found is not None:
                vouched = None if self._last_normal is None else self._last_normal - 1
                trip = found.model_copy(update={"vouched_step": vouched})
            watched_any = True
        if trip is None and watched_any:
            self._last_normal = step
        return trip

    def rebase(self) -> None:
        """Forget the levels (a loss weight changed: the loss's scale moved by design)."""
        self._levels.clear()
        self._bad_grads = 0

    def _judge(self, step: int, name: str, value: float) -> Trip | None:
        series = self._levels.get(name)
        if series is None:
            series = self._levels[name] = self._new_level(name)
        if -_LARGEST < value < series.threshold:  # finite and normal: the common case
            series.add(value)
            if self._bad_grads and name == GRAD_NORM:
                self._bad_grads = 0
            return None
        settings = self.settings
        grad = name == GRAD_NORM
        if not math.isfinite(value):
            if grad:
                self._bad_grads += 1
                if self._bad_grads < settings.nonfinite_grad_repeats:
                    return None
            return Trip(step=step, metric=name, value=None, cause="nonfinite")
        if grad:
            self._bad_grads = 0
        level = series.level
        if level is not None and series.threshold < _LARGEST:  # above 10x and the start
            return Trip(step=step, metric=name, value=value, level=level, cause="spike")
        series.add(value)  # a tripping reading never joins the level
        return None

    def _new_level(self, name: str) -> _Level:
        settings = self.settings
        factor = settings.grad_factor if name == GRAD_NORM else settings.loss_factor
        return _Level(settings.warmup, settings.window, factor)


def _is_watched(name: str) -> bool:
    return name == GRAD_NORM or (is_loss(name) and split_role(name)[0] != "val")


def _number(value: Any) -> float | None:
    if type(value) is float:
        return value
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None


def _median(values: Any) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
