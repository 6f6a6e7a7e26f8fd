"""``KNOB=VALUE`` assignments (``autopilot set``, a review edit, the service's commands):
parsing, and checking them against the knobs a running kernel published in ``kernel.json``.

The check uses the kernel's own validation (``kernel.Knob.resolve``), so both front ends
refuse exactly what the kernel would reject, only earlier and with the bad value in the
message.

Example:
    >>> parse_assignment("lr=x0.5")
    Assignment(knob='lr', value=None, multiplier=0.5)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from autopilot.errors import AutopilotError
from kernel import KernelState, Knob, KnobError, KnobSpec, KnobValue

_NAME = re.compile(r"[A-Za-z_][\w.\-]*(\[\d+\])?")
_TRUE, _FALSE = {"true", "on", "yes"}, {"false", "off", "no"}
_HINT = (
    "expected KNOB=VALUE with VALUE a number (1e-4), a multiplier (x0.5), true/false/"
    "on/off, or one number per param group (1e-3,1e-4)"
)


class AssignmentError(AutopilotError):
    """A ``KNOB=VALUE`` that cannot be read, or that the run's knobs would refuse."""


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """One parsed ``KNOB=VALUE``: an absolute ``value`` or a ``multiplier``."""

    knob: str
    value: KnobValue | None = None
    multiplier: float | None = None


def parse_assignment(text: str, state: KernelState | None = None) -> Assignment:
    """Parse ``text``; with a ``state``, also check the knob name, type and bounds.

    Raises:
        AssignmentError: with a one-line reason and the accepted forms.
    """
    name, sep, raw = (part.strip() for part in text.partition("="))
    if not sep or not raw or not _NAME.fullmatch(name):
        raise AssignmentError(f"cannot read '{text}': {_HINT}")
    spec = None if state is None else _spec_of(state, name)
    if raw[0] in "x*":
        assignment = Assignment(knob=name, multiplier=_multiplier(text, raw[1:]))
    else:
        assignment = Assignment(knob=name, value=_value(text, name, raw, spec))
    if spec is not None:
        _check(spec, assignment)
    return assignment


def _spec_of(state: KernelState, name: str) -> KnobSpec:
    spec = state.knob(name)
    if spec is None:
        known = ", ".join(sorted(k.name for k in state.knobs)) or "none"
        raise AssignmentError(f"unknown knob '{name}'; this run's knobs are: {known}")
    return spec


def _multiplier(text: str, raw: str) -> float:
    factor = _number(text, raw)
    if factor <= 0:
        raise AssignmentError(f"cannot read '{text}': a multiplier must be above 0, got {factor:g}")
    return factor


def _value(text: str, name: str, raw: str, spec: KnobSpec | None) -> KnobValue:
    word = raw.lower()
    if word in _TRUE | _FALSE:
        is_number = name == "grad_clip" or (spec is not None and spec.kind == "float")
        if is_number and word in _FALSE and (spec is None or spec.lo is None or spec.lo <= 0):
            return 0.0  # grad_clip=off: clipping off
        return word in _TRUE
    if "," in raw or raw.startswith("["):
        parts = [p for p in raw.strip("[]").split(",") if p.strip()]
        return [_number(text, p) for p in parts] if parts else _number(text, raw)
    return _number(text, raw)


def _number(text: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise AssignmentError(f"cannot read '{text}': {_HINT}") from None
    if not math.isfinite(value):
        raise AssignmentError(f"cannot read '{text}': the value must be a finite number, got {raw}")
    return value


def _check(spec: KnobSpec, assignment: Assignment) -> None:
    probe = _SpecKnob(spec)
    try:
        probe.resolve(assignment.value, assignment.multiplier)
    except KnobError as exc:
        how = (
            ""
            if assignment.multiplier is None
            else f" (current value {spec.value} x{assignment.multiplier:g})"
        )
        raise AssignmentError(f"{exc.knob} {exc.reason}{how}") from None


class _SpecKnob(Knob):
    """A stand-in knob holding a published spec, to run the kernel's validation on it."""

    def __init__(self, spec: KnobSpec) -> None:
        super().__init__(spec.name, kind=spec.kind, lo=spec.lo, hi=spec.hi, scale=spec.scale)
        self._value: Any = spec.value
        self.groups = spec.groups  # so a list of the wrong length is refused here too

    def get(self) -> KnobValue:
        return self._value

    def _write(self, value: Any) -> None:
        self._value = value
