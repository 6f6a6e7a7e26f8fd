"""What a run directory's ``autopilot.toml`` may change: only what makes the autopilot more
cautious.

A run directory is often on a shared filesystem, written by whoever runs the training. Its
config must give that writer no more power than sending validated commands, so it may only
tighten the user's own settings: a guard made stricter, a detector made slower to fire, a
knob's bounds narrowed. Everything else in it (the provider, the key's variable, the mode,
prices, the budget, any path, cadences) is ignored with a message naming the setting and
the file; the user's own config (``autopilot.config.load_config``) is where those live.

Example:
    >>> from autopilot.config import Settings
    >>> merged, sources, ignored = tighten(
    ...     Settings(), {"guards": {"max_up": 1.5}, "mode": "ai_auto"}, "RUN/autopilot.toml"
    ... )
    >>> merged.guards.max_up, merged.mode, sources
    (1.5, 'suggest', {'guards.max_up': 'RUN/autopilot.toml'})
    >>> list(ignored)
    ['mode']
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from kernel.validation import summarize_validation_error

if TYPE_CHECKING:
    from autopilot.config import Settings

logger = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]

TIGHTER: dict[str, dict[str, Direction]] = {
    "guards": {
        "cooldown_steps": "higher",
        "global_cooldown_steps": "higher",
        "max_actions": "lower",
        "max_up": "lower",
        "max_down": "higher",  # the factor a knob may be cut TO: a higher one cuts less
        "max_total_down": "higher",
        "max_total_up": "lower",
        "total_window_steps": "higher",
        "noop_threshold": "higher",
    },
    "detectors": {  # slower to fire: fewer proposals, never more
        "min_points": "higher",
        "plateau_patience_steps": "higher",
        "plateau_rel": "lower",
        "divergence_factor": "higher",
        "grad_explosion_factor": "higher",
        "overfit_patience_steps": "higher",
        "overfit_rel": "higher",
        "oscillation_volatility": "higher",
    },
}
"""Per section, the settings a run directory may set, and which way is more cautious."""

MAX_BYTES = 64 * 1024
"""A run directory's config larger than this is not read."""

_ELSEWHERE = (
    "a run directory's autopilot.toml may only tighten guards, detectors and bounds; "
    "set it in your own config (--config, $AUTOPILOT_CONFIG, ./autopilot.toml or {user})"
)


def tighten(
    base: Settings, raw: dict[str, Any], source: str, *, user_config: str = "the user config"
) -> tuple[Settings, dict[str, str], dict[str, str]]:
    """``base`` (the user's ``Settings``) with the cautious settings of ``raw`` applied.

    Returns:
        the merged settings, ``{setting: source}`` for each one applied, and
        ``{setting: message}`` for each one ignored (each message also logged as a warning).
    """
    sources: dict[str, str] = {}
    ignored: dict[str, str] = {}
    updates: dict[str, Any] = {}
    elsewhere = _ELSEWHERE.format(user=user_config)
    for key, value in raw.items():
        if key == "bounds" and isinstance(value, dict):
            updates["bounds"] = _bounds(base.bounds, value, source, sources, ignored)
        elif key in TIGHTER and isinstance(value, dict):
            section = getattr(base, key)
            updates[key] = _section(key, section, value, source, sources, ignored)
        elif isinstance(value, dict) and value:
            ignored.update(
                {f"{key}.{k}": f"{source}: {key}.{k} ignored: {elsewhere}" for k in value}
            )
        else:
            ignored[key] = f"{source}: {key} ignored: {elsewhere}"
    for line in ignored.values():
        logger.warning("%s", line)
    return base.model_copy(update=updates), sources, ignored


def _section(
    name: str,
    section: BaseModel,
    raw: dict[str, Any],
    source: str,
    sources: dict[str, str],
    ignored: dict[str, str],
) -> BaseModel:
    allowed = TIGHTER[name]
    for key, value in raw.items():
        setting = f"{name}.{key}"
        where = f"{source}: {setting} = {value!r} ignored"
        if key not in allowed:
            ignored[setting] = (
                f"{where}: a run directory may not set it (only {', '.join(allowed)})"
            )
            continue
        try:
            candidate = type(section).model_validate({**section.model_dump(), key: value})
        except ValidationError as exc:
            ignored[setting] = f"{where}: {summarize_validation_error(exc)}"
            continue
        ours, theirs = getattr(section, key), getattr(candidate, key)
        if theirs != ours and (theirs > ours) != (allowed[key] == "higher"):
            ignored[setting] = (
                f"{where}: it is looser than {ours!r} (a run directory may only set it "
                f"{allowed[key]})"
            )
            continue
        section, sources[setting] = candidate, source
    return section


def _bounds(
    base: dict[str, tuple[float, float]],
    raw: dict[str, Any],
    source: str,
    sources: dict[str, str],
    ignored: dict[str, str],
) -> dict[str, tuple[float, float]]:
    merged = dict(base)
    for knob, value in raw.items():
        where = f"{source}: bounds.{knob} = {value!r} ignored"
        bound = _pair(value)
        if bound is None:
            ignored[f"bounds.{knob}"] = f"{where}: must be [lo, hi] with lo <= hi"
            continue
        ours = base.get(knob)
        if ours is not None and not ours[0] <= bound[0] <= bound[1] <= ours[1]:
            ignored[f"bounds.{knob}"] = (
                f"{where}: it is not within {list(ours)} (a run directory may only narrow bounds)"
            )
            continue
        merged[knob], sources[f"bounds.{knob}"] = bound, source
    return merged


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    lo, hi = float(value[0]), float(value[1])
    if not (lo == lo and hi == hi and lo <= hi):  # NaN compares false
        return None
    return lo, hi
