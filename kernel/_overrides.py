"""Live changes against the training code: noticing overrides, composing schedules.

A hand-written loop may own a knob: nanoGPT sets ``param_group["lr"] = get_lr(it)`` at
every iteration, so a live ``lr x0.5`` is gone one iteration after it was applied. The
kernel remembers the value it last wrote to each knob a command changed; when the training
code moves the knob away from it, that is recorded as an ``overridden`` ledger row (before:
the value the kernel applied, after: what the code set; ``command_id``: the command undone)
and logged once per knob. A torch LR scheduler attached to the kernel is not an override:
the kernel rescales it, so its moves carry the change along.

``schedule`` is how a hand-written schedule composes with live changes: the loop hands the
kernel the value it would have set, and the kernel applies it times the knob's *factor*,
the live change relative to the schedule (``set lr=x0.5`` makes it 0.5; ``set lr=0.01``
makes it 0.01 over the scheduled value at that moment).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kernel.commands import KnobValue, format_value
from kernel.errors import KernelError, KnobError
from kernel.knobs import Knob, knob_family
from kernel.ledger import Ledger

logger = logging.getLogger(__name__)

Factor = float | list[float]


@dataclass
class _Applied:
    command_id: str | None
    value: KnobValue


class LiveChanges:
    """What the kernel last wrote to each knob, and the factors of scheduled knobs."""

    def __init__(self, knobs: Mapping[str, Knob], ledger: Ledger) -> None:
        self.knobs, self.ledger = knobs, ledger
        self._applied: dict[str, _Applied] = {}
        self._scheduled: dict[str, KnobValue] = {}
        self._factor: dict[str, Factor] = {}
        self._warned: set[str] = set()

    def note(self, knob: Knob, command_id: str | None) -> None:
        """The kernel has just applied a command to ``knob``."""
        self._applied[knob.name] = _Applied(command_id, knob.get())
        family = knob_family(knob.name)
        self._refresh(family)
        for name, scheduled in self._scheduled.items():
            if knob_family(name) == family:
                self._factor[name] = _ratio(self.knobs[name].get(), scheduled, self._factor[name])

    def schedule(self, name: str, value: KnobValue) -> KnobValue:
        """Set ``name`` to ``value`` times its factor (clamped to its bounds); the result."""
        knob = self.knobs.get(name)
        if knob is None:
            known = ", ".join(sorted(self.knobs)) or "none"
            raise KernelError(f"schedule: unknown knob '{name}'; this run's knobs are: {known}")
        if isinstance(value, bool) or knob.kind == "bool":
            raise KnobError(name, "a schedule sets numbers; an on/off knob is set by commands")
        factor = self._factor.setdefault(name, 1.0)
        self._scheduled[name] = value
        knob.set(_clamp(knob, _times(value, factor)))
        self._refresh(knob_family(name))
        return knob.get()

    def check(self, step: int | None) -> None:
        """Record an ``overridden`` row for each knob the training code moved away from the
        value a command gave it (once per command)."""
        for name, applied in list(self._applied.items()):
            knob = self.knobs[name]
            try:
                current = knob.get()
                if current == applied.value:
                    continue
                if knob.moved_by_its_scheduler():
                    applied.value = current  # the rescaled schedule carries the change
                    continue
            except Exception:  # a custom getter; its failure is reported when publishing
                continue
            del self._applied[name]
            self._record(step, knob, applied, current)

    def _record(self, step: int | None, knob: Knob, applied: _Applied, current: Any) -> None:
        name = knob.name
        reason = (
            f"the training code set {name} to {format_value(current)} after the kernel "
            f"applied {format_value(applied.value)} (command {applied.command_id}): the live "
            f"change is gone. A hand-written schedule keeps live changes with "
            f"kernel.schedule({name!r}, value)"
        )
        self.ledger.record(
            step=step,
            decision="overridden",
            command_id=applied.command_id,
            op="set",
            knob=name,
            before=applied.value,
            after=current,
            reason=reason,
        )
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s (warned once per knob)", reason)

    def _refresh(self, family: str) -> None:
        """The kernel wrote to ``family``: what it applied there is what it reads now."""
        for name, applied in self._applied.items():
            if knob_family(name) == family:
                applied.value = self.knobs[name].get()


def _times(value: KnobValue, factor: Factor) -> KnobValue:
    if isinstance(value, list):
        factors = factor if isinstance(factor, list) else [factor] * len(value)
        return [v * f for v, f in zip(value, factors, strict=True)]
    if isinstance(factor, list):
        return [float(value) * f for f in factor]
    return float(value) * factor


def _ratio(current: KnobValue, scheduled: KnobValue, old: Factor) -> Factor:
    """``current / scheduled``, per param group when either is a list; a group scheduled at
    0 keeps its old factor."""
    if not isinstance(current, list) and not isinstance(scheduled, list):
        return float(current) / float(scheduled) if scheduled else old
    n = len(current) if isinstance(current, list) else len(scheduled)  # type: ignore[arg-type]
    groups = zip(_per_group(current, n), _per_group(scheduled, n), _per_group(old, n), strict=True)
    ratios = [c / s if s else o for c, s, o in groups]
    return ratios[0] if all(math.isclose(r, ratios[0]) for r in ratios) else ratios


def _per_group(value: KnobValue | Factor, n: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)] * n


def _clamp(knob: Knob, value: KnobValue) -> KnobValue:
    lo = -math.inf if knob.lo is None else knob.lo
    hi = math.inf if knob.hi is None else knob.hi
    if isinstance(value, list):
        return [min(max(v, lo), hi) for v in value]
    return min(max(float(value), lo), hi)
