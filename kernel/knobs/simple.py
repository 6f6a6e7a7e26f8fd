"""Knobs over plain values: gradient clipping and the user's loss-weight dict."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from kernel.commands import KnobValue
from kernel.knobs._base import Knob


class GradClipKnob(Knob):
    """Max gradient norm used by ``Kernel.clip_grad_norm_``; ``0`` means clipping is off."""

    def __init__(self, initial: float | None = None, *, lo: float = 0.0, hi: float = 1e4) -> None:
        super().__init__(
            "grad_clip",
            lo=lo,
            hi=hi,
            description="max gradient norm for clipping; 0 turns clipping off",
        )
        self.value = float(initial or 0.0)

    def get(self) -> KnobValue:
        return self.value

    def _write(self, value: Any) -> None:
        self.value = float(value)

    zero_reason = (
        "clipping is off (0), so a multiplier has nothing to scale; "
        "set a max norm first, e.g. grad_clip=1.0"
    )


LOSS_WEIGHT_PREFIX = "loss."
"""A loss weight's knob is ``loss.<key>``, ``<key>`` its key in the user's dict."""


def loss_weight_knob(key: str) -> str:
    """The knob name of loss-weight ``key``.

    Example:
        >>> loss_weight_knob("aux")
        'loss.aux'
    """
    return f"{LOSS_WEIGHT_PREFIX}{key}"


class LossWeightKnob(Knob):
    """One entry of the user's loss-weight dict: a float weight or a bool term toggle.

    The kernel writes into the user's own dict, so the training loop sees the change at its
    next read of ``weights["name"]``.
    """

    def __init__(
        self, weights: MutableMapping[str, Any], key: str, *, lo: float = 0.0, hi: float = 100.0
    ) -> None:
        is_toggle = isinstance(weights[key], bool)
        super().__init__(
            loss_weight_knob(key),
            kind="bool" if is_toggle else "float",
            lo=None if is_toggle else lo,
            hi=None if is_toggle else hi,
            description=f"loss term '{key}' " + ("on/off" if is_toggle else "weight"),
        )
        self._weights, self._key = weights, key

    def get(self) -> KnobValue:
        value = self._weights[self._key]
        return value if isinstance(value, bool) else float(value)

    def _write(self, value: Any) -> None:
        self._weights[self._key] = value
