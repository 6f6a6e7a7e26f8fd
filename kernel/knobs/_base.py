"""The knob protocol: a named, typed, bounded value the kernel may change live.

Every knob can ``snapshot`` its full state and ``restore`` it exactly, so a change that
fails half-way, or that the autopilot later rolls back, leaves nothing behind.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from kernel.commands import KnobValue
from kernel.errors import KnobError

Kind = Literal["float", "bool"]
Scale = Literal["log", "linear"]


def knob_family(name: str) -> str:
    """``lr[1]`` -> ``lr``: a per-group knob and its all-groups knob change the same thing.

    Example:
        >>> knob_family("lr[1]"), knob_family("loss.aux")
        ('lr', 'loss.aux')
    """
    return name.split("[", 1)[0]


class KnobSpec(BaseModel):
    """What other processes see of a knob in ``kernel.json``."""

    name: str
    kind: Kind
    lo: float | None = None
    hi: float | None = None
    scale: Scale = "linear"
    value: KnobValue
    groups: int | None = None
    """For a knob over several optimizer param groups: how many numbers a list value needs."""
    description: str = ""


class Knob(ABC):
    """Base class of knobs. Subclasses implement ``get`` and ``_write``.

    Example:
        >>> class Temperature(Knob):
        ...     def __init__(self):
        ...         super().__init__("temperature", lo=0.1, hi=10.0)
        ...         self.t = 1.0
        ...     def get(self):
        ...         return self.t
        ...     def _write(self, value):
        ...         self.t = value
        >>> k = Temperature()
        >>> k.set(k.resolve(multiplier=2.0)); k.get()
        2.0
    """

    groups: int | None = None
    """Knobs over several param groups accept a list with one number per group."""
    zero_reason: str | None = None
    """Why a multiplier is refused while the knob is 0 (a default message when None)."""

    def __init__(
        self,
        name: str,
        *,
        kind: Kind = "float",
        lo: float | None = None,
        hi: float | None = None,
        scale: Scale = "linear",
        description: str = "",
    ) -> None:
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"knob {name}: lower bound {lo} is above upper bound {hi}")
        self.name, self.kind, self.lo, self.hi = name, kind, lo, hi
        self.scale, self.description = scale, description

    @abstractmethod
    def get(self) -> KnobValue:
        """The current value."""

    @abstractmethod
    def _write(self, value: Any) -> None:
        """Store an already validated value."""

    def snapshot(self) -> Any:
        """Everything needed to undo a change exactly."""
        return self.get()

    def restore(self, snapshot: Any) -> None:
        """Put back what ``snapshot`` returned."""
        self._write(snapshot)

    def set(self, value: KnobValue) -> None:
        """Validate ``value`` and store it."""
        self._write(self.validate(value))

    def resolve(self, value: KnobValue | None = None, multiplier: float | None = None) -> KnobValue:
        """The validated target of a command: ``value``, or the current value x ``multiplier``."""
        if multiplier is None:
            return self.validate(value)
        if self.kind == "bool":
            raise KnobError(
                self.name, "a multiplier cannot apply to an on/off knob; set true or false"
            )
        current = self.get()
        values = current if isinstance(current, list) else [float(current)]
        if not any(values):  # scaling zero would be "applied" and change nothing
            raise KnobError(
                self.name,
                self.zero_reason
                or f"is 0, so a multiplier has nothing to scale; set a value first, "
                f"e.g. {self.name}=0.01",
            )
        if isinstance(current, list):
            return self.validate([v * multiplier for v in current])
        return self.validate(float(current) * multiplier)

    def validate(self, value: Any) -> KnobValue:
        """Return ``value`` if it has the knob's type and is within bounds; raise ``KnobError``."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise KnobError(self.name, f"expects true or false, got {value!r}")
            return value
        if isinstance(value, list):
            if self.groups is None or len(value) != self.groups:
                need = "one number" if self.groups is None else f"{self.groups} numbers or one"
                raise KnobError(self.name, f"expects {need}, got a list of {len(value)}")
            return [self._check_number(v) for v in value]
        return self._check_number(value)

    def _check_number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KnobError(self.name, f"expects a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise KnobError(self.name, f"expects a finite number, got {value}")
        lo = -math.inf if self.lo is None else self.lo
        hi = math.inf if self.hi is None else self.hi
        if not lo <= value <= hi:
            raise KnobError(self.name, f"must be within [{self.lo}, {self.hi}], got {value:g}")
        return value

    def moved_by_its_scheduler(self) -> bool:
        """Whether the knob's current value came from a scheduler the kernel keeps in step
        with live changes (then a move is not the training code overriding a change)."""
        return False

    def spec(self) -> KnobSpec:
        return KnobSpec(
            name=self.name,
            kind=self.kind,
            lo=self.lo,
            hi=self.hi,
            scale=self.scale,
            value=self.get(),
            groups=self.groups,
            description=self.description,
        )


class FnKnob(Knob):
    """A custom knob from a getter and a setter.

    Example:
        >>> state = {"dropout": 0.1}
        >>> knob = FnKnob("dropout", get=lambda: state["dropout"],
        ...               set=lambda v: state.update(dropout=v), lo=0.0, hi=0.9)
        >>> knob.set(0.3); state["dropout"]
        0.3
    """

    def __init__(
        self,
        name: str,
        *,
        get: Callable[[], Any],
        set: Callable[[Any], None],
        kind: Kind = "float",
        lo: float | None = None,
        hi: float | None = None,
        scale: Scale = "linear",
        description: str = "",
    ) -> None:
        super().__init__(name, kind=kind, lo=lo, hi=hi, scale=scale, description=description)
        self._get, self._set = get, set

    def get(self) -> KnobValue:
        value = self._get()
        return value if isinstance(value, bool) else float(value)

    def _write(self, value: Any) -> None:
        self._set(value)
