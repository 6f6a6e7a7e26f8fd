"""Which way a diagnosis allows each knob family to move: the one home of that table.

A schema-valid proposal can still push the wrong way (an LLM answering ``lr = 1e9`` during
a divergence). The guards reject a move this table forbids (rule ``direction``) unless a
person approves it, the rule policy never proposes one, and a rollback never restores a
value that one would reach.

| diagnosis   | forbidden moves                                            |
|-------------|------------------------------------------------------------|
| divergence  | raise ``lr``; loosen ``grad_clip`` (raise it, or turn it    |
|             | off); raise ``momentum`` or ``beta1``                       |
| oscillation | the same as divergence                                     |
| overfitting | lower ``weight_decay`` (to 0 included)                     |
| plateau     | none: a warm restart (up) and a decay (down) both help     |

Why each entry: a larger step size, looser clipping or more momentum make an unstable run
overshoot further, and less weight decay regularises less. Overfitting has no ``lr`` entry:
a smaller lr anneals and a larger one regularises by its noise, so neither is condemned by
the diagnosis itself. Loss weights have none either: which way helps depends on what the
user's term means. The LLM analyst's ``other`` and ``healthy`` forbid nothing; the kinds the
detectors found in the same tick always apply, whatever the proposal calls itself.

Example:
    >>> against(("divergence",), "lr", 0.3, 0.6)
    'would raise lr during a divergence'
    >>> against(("divergence",), "grad_clip", 1.0, 0.0)
    'would turn grad_clip off during a divergence'
    >>> against(("overfitting",), "lr", 0.1, 0.2) is None
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from kernel import KnobValue
from kernel.knobs import knob_family

Move = Literal["raise", "lower", "loosen"]
"""``loosen`` is for a clipping limit: raising it, or turning it off (0)."""

_UNSTABLE: dict[str, Move] = {
    "lr": "raise",
    "grad_clip": "loosen",
    "momentum": "raise",
    "beta1": "raise",
}
FORBIDDEN: dict[str, dict[str, Move]] = {
    "divergence": _UNSTABLE,
    "oscillation": _UNSTABLE,
    "overfitting": {"weight_decay": "lower"},
}
"""Per diagnosis kind, per knob family, the move that kind forbids."""


def against(
    kinds: Iterable[str | None], knob: str, before: KnobValue | None, after: KnobValue | None
) -> str | None:
    """Why moving ``knob`` from ``before`` to ``after`` goes against one of the diagnoses
    ``kinds`` (e.g. ``"would raise lr during a divergence"``), or ``None`` when none of
    them forbids it. A per-group value is judged group by group: one group moving the
    forbidden way is enough."""
    family = knob_family(knob)
    for kind in dict.fromkeys(k for k in kinds if k):
        move = FORBIDDEN.get(kind, {}).get(family)
        if move is not None and _moves(move, before, after):
            return f"would {_phrase(move, family, after)} {_while(kind)}"
    return None


def _moves(move: Move, before: KnobValue | None, after: KnobValue | None) -> bool:
    pairs = _pairs(before, after)
    if move == "raise":
        return any(a > b for b, a in pairs)
    if move == "lower":
        return any(a < b for b, a in pairs)
    return any(b > 0 and (a == 0 or a > b) for b, a in pairs)  # loosen a clipping limit


def _pairs(before: KnobValue | None, after: KnobValue | None) -> list[tuple[float, float]]:
    """Numeric (before, after) per group, a single number broadcast; none for a toggle."""
    if before is None or after is None or isinstance(before, bool) or isinstance(after, bool):
        return []
    b = [float(v) for v in before] if isinstance(before, list) else [float(before)]
    a = [float(v) for v in after] if isinstance(after, list) else [float(after)]
    n = max(len(a), len(b))
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        return []
    return list(zip(b * n if len(b) == 1 else b, a * n if len(a) == 1 else a, strict=True))


def _phrase(move: Move, family: str, after: KnobValue | None) -> str:
    off = move == "loosen" and (after == 0 or (isinstance(after, list) and 0 in after))
    return f"turn {family} off" if off else f"{move} {family}"


def _while(kind: str) -> str:
    if kind == "overfitting":
        return "while the run is overfitting"
    return f"during {'an' if kind[0] in 'aeiou' else 'a'} {kind}"


__all__ = ["FORBIDDEN", "Move", "against"]
