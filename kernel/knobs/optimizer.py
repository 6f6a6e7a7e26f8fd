"""Knobs over an optimizer's hyperparameters, kept consistent with attached LR schedulers.

Discovered knobs: ``lr``, ``weight_decay``, ``momentum``, ``beta1``, ``beta2`` (those the
optimizer's param groups have). A knob without an index covers every param group; with
several groups, ``lr[1]`` etc. address one group.

A live learning-rate change *rescales the schedule*: when ``lr`` goes from ``old`` to
``new``, every value a scheduler derives the learning rate from (``base_lrs``, ``max_lrs``,
the group's ``initial_lr``/``max_lr``/``min_lr``) is multiplied by ``new / old``. The
schedule keeps its shape and continues from the new value, so neither a closed-form
scheduler (``LambdaLR``, ``OneCycleLR``) nor a recursive one (``StepLR``,
``CosineAnnealingLR``) undoes the change at its next ``step()``. Floors such as
``eta_min`` and ``ReduceLROnPlateau``'s ``min_lrs`` are absolute and left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kernel.commands import KnobValue
from kernel.knobs._base import Knob, Scale

DEFAULT_BOUNDS: dict[str, tuple[float, float, Scale]] = {
    "lr": (1e-7, 10.0, "log"),
    "weight_decay": (0.0, 1.0, "linear"),
    "momentum": (0.0, 0.999, "linear"),
    "beta1": (0.0, 0.999, "linear"),
    "beta2": (0.0, 0.99999, "linear"),
}
_DESCRIPTIONS = {
    "lr": "learning rate (scales the LR schedule with it)",
    "weight_decay": "weight decay",
    "momentum": "momentum",
    "beta1": "Adam beta1 (first-moment decay)",
    "beta2": "Adam beta2 (second-moment decay)",
}
_SCHEDULE_KEYS = ("initial_lr", "max_lr", "min_lr")
_SCHEDULER_LISTS = ("base_lrs", "max_lrs", "_last_lr")
Slot = tuple[Any, Any]  # (container, key): container[key] holds a number tied to the lr


class OptimizerKnob(Knob):
    """One hyperparameter over some of an optimizer's param groups."""

    def __init__(
        self,
        optimizer: Any,
        hyper: str,
        groups: Sequence[int],
        *,
        name: str,
        lo: float,
        hi: float,
        scale: Scale,
        schedulers: Sequence[Any] = (),
    ) -> None:
        super().__init__(name, lo=lo, hi=hi, scale=scale, description=_DESCRIPTIONS[hyper])
        self.optimizer, self.hyper, self.group_indices = optimizer, hyper, list(groups)
        self.groups = len(self.group_indices) if len(self.group_indices) > 1 else None
        self.schedulers = list(_flatten(schedulers))
        self._outer = [s for s in schedulers if s is not None]

    def get(self) -> KnobValue:
        values = [self._read(g) for g in self.group_indices]
        return values[0] if all(v == values[0] for v in values) else values

    def _write(self, value: Any) -> None:
        values = value if isinstance(value, list) else [value] * len(self.group_indices)
        for g, v in zip(self.group_indices, values, strict=True):
            if self.hyper == "lr":
                self._rescale_lr(g, v)
            else:
                self._store(g, v)

    def snapshot(self) -> Any:
        if self.hyper != "lr":
            return [self._read(g) for g in self.group_indices]
        return [(c, k, _copy(c[k])) for g in self.group_indices for c, k in self._lr_slots(g)]

    def restore(self, snapshot: Any) -> None:
        if self.hyper != "lr":
            for g, v in zip(self.group_indices, snapshot, strict=True):
                self._store(g, v)
            return
        for container, key, value in snapshot:
            _assign(container, key, value)

    def moved_by_its_scheduler(self) -> bool:
        """A scheduler's ``step`` leaves ``_last_lr`` equal to the group's lr; training code
        that writes the lr itself does not (a scheduler without ``_last_lr``: trusted)."""
        if self.hyper != "lr" or not self._outer:
            return False
        for sched in self._outer:
            last = getattr(sched, "_last_lr", None)
            if not isinstance(last, list):
                continue
            for g in self.group_indices:
                if g >= len(last) or not math.isclose(float(last[g]), self._read(g)):
                    return False
        return True

    def _read(self, g: int) -> float:
        group = self.optimizer.param_groups[g]
        if self.hyper in ("beta1", "beta2"):
            return float(group["betas"][0 if self.hyper == "beta1" else 1])
        return float(group[self.hyper])

    def _store(self, g: int, value: float) -> None:
        group = self.optimizer.param_groups[g]
        if self.hyper in ("beta1", "beta2"):
            betas = list(group["betas"])
            betas[0 if self.hyper == "beta1" else 1] = value
            group["betas"] = tuple(betas)
        else:
            _assign(group, self.hyper, value)

    def _rescale_lr(self, g: int, new: float) -> None:
        group = self.optimizer.param_groups[g]
        old = float(group["lr"])
        if old > 0:
            for container, key in self._lr_slots(g):
                _assign(container, key, float(container[key]) * new / old)
        _assign(group, "lr", new)  # exact, free of rounding by the ratio
        for sched in self.schedulers:
            last = getattr(sched, "_last_lr", None)
            if isinstance(last, list) and g < len(last):
                _assign(last, g, new)

    def _lr_slots(self, g: int) -> list[Slot]:
        group = self.optimizer.param_groups[g]
        slots: list[Slot] = [(group, "lr")]
        slots += [(group, k) for k in _SCHEDULE_KEYS if k in group]
        for sched in self.schedulers:
            for attr in _SCHEDULER_LISTS:
                seq = getattr(sched, attr, None)
                if isinstance(seq, list) and g < len(seq):
                    slots.append((seq, g))
        return slots


def _copy(value: Any) -> Any:
    """A value that later in-place changes of ``value`` cannot reach (tensors are cloned)."""
    return value.clone() if hasattr(value, "clone") else value


def _assign(container: Any, key: Any, value: float) -> None:
    current = container[key]
    if hasattr(value, "item"):
        value = value.item()
    if hasattr(current, "fill_"):  # a tensor-valued hyperparameter (capturable optimizers)
        current.fill_(value)
    else:
        container[key] = value


def _flatten(schedulers: Iterable[Any]) -> Iterable[Any]:
    for sched in schedulers:
        if sched is None:
            continue
        yield sched
        yield from _flatten(getattr(sched, "_schedulers", ()))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or getattr(value, "numel", lambda: 0)() == 1


def _hypers(group: Mapping[str, Any]) -> list[str]:
    found = [h for h in ("lr", "weight_decay", "momentum") if _is_number(group.get(h))]
    betas = group.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        found += ["beta1", "beta2"]
    return found


def optimizer_knobs(
    optimizer: Any,
    schedulers: Sequence[Any] = (),
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> list[OptimizerKnob]:
    """Discover the knobs of ``optimizer``: all-group knobs, plus per-group ones if several."""
    bounds = bounds or {}
    n_groups = len(optimizer.param_groups)
    knobs = []
    for hyper in _hypers(optimizer.param_groups[0]):
        lo, hi, scale = DEFAULT_BOUNDS[hyper]
        names = [(hyper, list(range(n_groups)))]
        if n_groups > 1:
            names += [(f"{hyper}[{g}]", [g]) for g in range(n_groups)]
        for name, groups in names:
            lo_, hi_ = bounds.get(name, bounds.get(hyper, (lo, hi)))
            knobs.append(
                OptimizerKnob(
                    optimizer,
                    hyper,
                    groups,
                    name=name,
                    lo=lo_,
                    hi=hi_,
                    scale=scale,
                    schedulers=schedulers,
                )
            )
    return knobs
