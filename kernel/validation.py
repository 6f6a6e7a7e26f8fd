"""One line that says what is wrong with a value pydantic refused: the one summary of a
``ValidationError`` for every boundary (commands, settings, LLM replies, recorded runs).

Example:
    >>> from pydantic import BaseModel, Field, ValidationError
    >>> class Step(BaseModel):
    ...     step: int = Field(ge=0)
    >>> try:
    ...     Step(step=-3)
    ... except ValidationError as exc:
    ...     print(summarize_validation_error(exc))
    step: Input should be greater than or equal to 0, got -3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

SHORT_VALUE = 60
"""A value given is shown up to this many characters (``repr``), then cut with ``...``."""
_NO_VALUE = {"missing", "json_invalid"}
"""Error types whose input is not the bad value (a missing field's input is its parent)."""


def summarize_validation_error(
    exc: ValidationError,
    *,
    limit: int = 3,
    depth: int | None = None,
    types: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> str:
    """Each bad field with the rule it broke and the value given, on one line.

    ``events[0].kind: Input should be 'plateau' or 'divergence', got 'blowup'; and 2 more``.

    Args:
        exc: what pydantic raised.
        limit: at most this many fields are named; the rest are counted.
        depth: name fields by the first ``depth`` parts of their location (1: top-level
            fields, so a union's members give one message, not one each); all when ``None``.
        types: messages that replace pydantic's, by error type (``extra_forbidden``).
        fields: messages that replace pydantic's, by field name as shown.
    """
    parts: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = err["loc"] if depth is None else err["loc"][:depth]
        where = location_text(loc)
        if where in seen:
            continue
        seen.add(where)
        msg = (fields or {}).get(where) or (types or {}).get(err["type"]) or err["msg"]
        msg = msg.removeprefix("Value error, ")
        got = "" if not loc or err["type"] in _NO_VALUE else f", got {_short(err['input'])}"
        parts.append(f"{where}: {msg}{got}" if where else msg + got)
    more = len(parts) - limit
    return "; ".join(parts[:limit] + ([f"and {more} more"] if more > 0 else []))


def location_text(loc: Sequence[int | str]) -> str:
    """``("events", 0, "kind")`` as ``events[0].kind``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 3] + "..."
