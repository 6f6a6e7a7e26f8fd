"""Guards: the hard limits between a policy's proposal and the kernel.

``check`` turns each action of a proposal into a ``Verdict`` (allowed, clamped or rejected,
with the reason and the final absolute value); ``commands_for`` turns the verdicts that pass
into kernel commands. Nothing here raises for a bad proposal: verdicts are data.

The rules, in the order they are applied:

* the run is frozen (``freeze prod`` or ``replay``): every action is rejected;
* the proposal's confidence is below ``guards.noop_threshold``: every action is a no-op;
* an autopilot change is younger than ``guards.global_cooldown_steps``: every action waits;
* per action: an unknown knob, a second action on the same knob (``lr`` and ``lr[1]`` count
  as the same), a knob changed (by anyone, a human too) less than ``guards.cooldown_steps``
  ago, or a value of the wrong type (the kernel's own validation) is rejected;
* a multiplier is resolved against the knob's true current value in ``kernel.json``;
* the change is capped to ``[max_down, max_up]`` x the current value (not from 0: turning
  gradient clipping on is bounded by the bounds only), then clamped into the kernel's bounds
  intersected with the config's ``bounds``;
* a change that leaves the value as it is is rejected, and actions beyond
  ``guards.max_actions`` that would pass are dropped.

Example:
    >>> from kernel import KnobSpec
    >>> ctx = GuardContext(step=500, knobs={"lr": KnobSpec(name="lr", kind="float",
    ...     lo=1e-7, hi=10.0, value=0.1)})
    >>> p = Proposal(proposer="rules", diagnosis="plateau",
    ...              actions=[Action(knob="lr", multiplier=5.0)])
    >>> v = check(p, ctx, Settings())[0]
    >>> v.status, v.value
    ('clamped', 0.2)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import Settings
from autopilot.errors import AutopilotError
from autopilot.proposals import Action, Proposal
from kernel import (
    Command,
    Knob,
    KnobError,
    KnobSpec,
    KnobValue,
    format_value,
    read_freeze,
    read_kernel_state,
    read_ledger,
)
from kernel.commands import Source

VerdictStatus = Literal["allowed", "clamped", "rejected"]
AUTOPILOT_SOURCES = frozenset({"rules", "ai", "tune"})
"""Ledger sources that count for the global cooldown."""
_SAME = 1e-9  # a relative change below this is no change


class Verdict(BaseModel):
    """What the guards decided about one action of a proposal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    """The action's position in the proposal."""
    knob: str
    status: VerdictStatus
    requested: Action
    """The action as the policy proposed it (a clamped verdict keeps the original here)."""
    value: KnobValue | None = None
    """The absolute value to send; ``None`` when rejected."""
    before: KnobValue | None = None
    """The knob's value in ``kernel.json`` when the guards ran."""
    reason: str

    @property
    def passed(self) -> bool:
        """Whether this verdict becomes a command (allowed or clamped)."""
        return self.status != "rejected"


@dataclass(frozen=True, kw_only=True)
class GuardContext:
    """What the guards know about the run: its step, knobs, freeze mode and change history."""

    step: int
    knobs: dict[str, KnobSpec]
    freeze: str = "off"
    last_change_step: dict[str, int] = field(default_factory=dict)
    """Per knob, the step of its last applied change from any source (humans included)."""
    last_autopilot_step: int | None = None
    """The step of the last applied change from ``rules``, ``ai`` or ``tune``."""

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> GuardContext:
        """Read ``kernel.json``, ``freeze.json`` and the ledger's applied rows.

        Raises:
            AutopilotError: when no kernel has started in ``run_dir`` yet.
        """
        state = read_kernel_state(run_dir)
        if state is None:
            raise AutopilotError(
                f"no kernel has started in {run_dir} yet, so its knobs are unknown; "
                "start the training first"
            )
        rows = [r for r in read_ledger(run_dir) if r.decision == "applied" and r.op == "set"]
        last: dict[str, int] = {}
        for row in rows:
            if row.knob is not None and row.step is not None:
                last[row.knob] = max(last.get(row.knob, row.step), row.step)
        auto = [r.step for r in rows if r.source in AUTOPILOT_SOURCES and r.step is not None]
        return cls(
            step=state.last_step or 0,
            knobs={k.name: k for k in state.knobs},
            freeze=state.freeze if state.freeze != "off" else read_freeze(run_dir).mode,
            last_change_step=last,
            last_autopilot_step=max(auto, default=None),
        )


def check(proposal: Proposal, ctx: GuardContext, settings: Settings) -> list[Verdict]:
    """The verdict on each action of ``proposal``, in order (see the module's rules)."""
    blanket = _blanket_reason(proposal, ctx, settings)
    if blanket is not None:
        return [_reject(i, a, ctx, blanket) for i, a in enumerate(proposal.actions)]
    verdicts: list[Verdict] = []
    first_of: dict[str, int] = {}
    for i, action in enumerate(proposal.actions):
        verdict = _check_action(i, action, ctx, settings, first_of)
        if verdict.passed and sum(v.passed for v in verdicts) >= settings.guards.max_actions:
            why = f"guards.max_actions is {settings.guards.max_actions}: one decision changes "
            verdict = _reject(i, action, ctx, why + "at most that many knobs; dropped")
        verdicts.append(verdict)
    return verdicts


def command_id(source: str, proposal_id: str, index: int) -> str:
    """The id of the command for action ``index``: the same on every re-run of a decision."""
    return f"{source}-{proposal_id}-{index}"


def commands_for(
    verdicts: list[Verdict], *, source: Source, proposal_id: str, reason_prefix: str = ""
) -> list[Command]:
    """Kernel commands for the verdicts that passed.

    A multiplier action stays a multiplier (the guarded factor), so the kernel scales the
    knob's value at the step it applies it: a value that moved since ``kernel.json`` was
    read (a scheduler) still changes by at most the guarded factor, and the kernel refuses a
    result outside the knob's bounds. An absolute action is sent as the guarded value.

    Example:
        >>> v = Verdict(index=0, knob="lr", status="allowed", value=0.05, before=0.1,
        ...             requested=Action(knob="lr", multiplier=0.5), reason="lr 0.1 -> 0.05")
        >>> commands_for([v], source="rules", proposal_id="d-7", reason_prefix="plateau")[0].id
        'rules-d-7-0'
    """
    return [
        Command(
            id=command_id(source, proposal_id, v.index),
            source=source,
            knob=v.knob,
            **_change(v),
            proposal_id=proposal_id,
            reason="; ".join(p for p in (reason_prefix, v.requested.reason, v.reason) if p)[:4000],
        )
        for v in verdicts
        if v.passed
    ]


def _change(verdict: Verdict) -> dict[str, Any]:
    """``{"multiplier": m}`` for a multiplier action with one factor, else ``{"value": v}``."""
    before, after = verdict.before, verdict.value
    if verdict.requested.multiplier is None or isinstance(after, bool):
        return {"value": after}
    pairs = (
        list(zip(before, after, strict=True))
        if isinstance(before, list) and isinstance(after, list)
        else [(before, after)]
        if isinstance(before, float | int) and isinstance(after, float | int)
        else []
    )
    factors = {round(a / b, 12) for b, a in pairs if b}
    if len(factors) != 1 or len(pairs) == 0 or any(not b for b, _ in pairs):
        return {"value": after}
    return {"multiplier": float(factors.pop())}


def _blanket_reason(proposal: Proposal, ctx: GuardContext, settings: Settings) -> str | None:
    """Why every action of the proposal is rejected at once, or ``None``."""
    if ctx.freeze != "off":
        return (
            f"the run is frozen (freeze {ctx.freeze}): the kernel ignores knob changes "
            "until `autopilot freeze off`"
        )
    threshold = settings.guards.noop_threshold
    if proposal.confidence < threshold:
        return (
            f"confidence {proposal.confidence:g} below the noop threshold {threshold:g}: no change"
        )
    last, cooldown = ctx.last_autopilot_step, settings.guards.global_cooldown_steps
    if last is not None and ctx.step - last < cooldown:
        left = cooldown - (ctx.step - last)
        return (
            f"the autopilot changed the run at step {last}; guards.global_cooldown_steps is "
            f"{cooldown}, so {left} more steps to wait (now step {ctx.step})"
        )
    return None


def _check_action(
    i: int, action: Action, ctx: GuardContext, settings: Settings, first_of: dict[str, int]
) -> Verdict:
    spec = ctx.knobs.get(action.knob)
    if spec is None:
        known = ", ".join(sorted(ctx.knobs)) or "none"
        return _reject(
            i, action, ctx, f"unknown knob '{action.knob}'; this run's knobs are: {known}"
        )
    family = _family(action.knob)
    if family in first_of:
        return _reject(
            i,
            action,
            ctx,
            f"merged into action {first_of[family]} (the first action on {family} wins)",
        )
    first_of[family] = i
    wait = _cooldown_reason(action.knob, ctx, settings)
    if wait is not None:
        return _reject(i, action, ctx, wait)
    return _resolve(i, action, spec, settings)


def _family(knob: str) -> str:
    """``lr[1]`` -> ``lr``: a per-group knob and its all-groups knob change the same thing."""
    return knob.split("[", 1)[0]


def _cooldown_reason(knob: str, ctx: GuardContext, settings: Settings) -> str | None:
    family = _family(knob)
    steps = [s for k, s in ctx.last_change_step.items() if _family(k) == family]
    if not steps:
        return None
    last, cooldown = max(steps), settings.guards.cooldown_steps
    if ctx.step - last >= cooldown:
        return None
    left = cooldown - (ctx.step - last)
    return (
        f"{family} was changed at step {last}; guards.cooldown_steps is {cooldown}, "
        f"so {left} more steps to wait (now step {ctx.step})"
    )


def _resolve(i: int, action: Action, spec: KnobSpec, settings: Settings) -> Verdict:
    """Resolve, cap and clamp one action on a known knob outside its cooldown."""
    try:  # the kernel's own rules: types, list lengths, bools, a multiplier on 0
        target = _Probe(spec).resolve(action.value, action.multiplier)
    except KnobError as exc:
        return _verdict(i, action, spec, "rejected", None, f"{exc.knob} {exc.reason}")
    if isinstance(target, bool):
        if target == spec.value:
            return _verdict(i, action, spec, "rejected", None, _no_change(spec))
        return _verdict(i, action, spec, "allowed", target, _change_text(spec, target))
    lo, hi = _bounds(spec, settings)
    if lo > hi:
        why = (
            f"the kernel's bounds [{spec.lo}, {spec.hi}] and bounds.{spec.name} in the config "
            f"do not overlap; fix bounds.{spec.name} in autopilot.toml"
        )
        return _verdict(i, action, spec, "rejected", None, why)
    return _bounded(i, action, spec, target, (lo, hi), settings)


def _bounded(
    i: int,
    action: Action,
    spec: KnobSpec,
    target: KnobValue,
    bounds: tuple[float, float],
    settings: Settings,
) -> Verdict:
    current, wanted = _pair(spec.value, target)
    notes: list[str] = []
    final = [_limit(c, t, bounds, settings, notes) for c, t in zip(current, wanted, strict=True)]
    if all(_same(c, f) for c, f in zip(current, final, strict=True)):
        return _verdict(i, action, spec, "rejected", None, _no_change(spec))
    value: KnobValue = final[0] if len(final) == 1 else final
    if not notes:
        return _verdict(i, action, spec, "allowed", value, _change_text(spec, value))
    why = (
        f"{action.describe()} would give {format_value(target)}; "
        f"{' and '.join(dict.fromkeys(notes))}: {_change_text(spec, value)}"
    )
    return _verdict(i, action, spec, "clamped", value, why)


def _limit(
    current: float, target: float, bounds: tuple[float, float], settings: Settings, notes: list[str]
) -> float:
    """Cap ``target`` to the allowed relative step from ``current``, then into ``bounds``."""
    value = target
    if current != 0:  # from 0 there is no relative step to cap (e.g. enabling grad_clip)
        down, up = settings.guards.max_down, settings.guards.max_up
        if target > current * up:
            value = current * up
            notes.append(f"capped at x{up:g} (guards.max_up)")
        elif target < current * down:
            value = current * down
            notes.append(f"capped at x{down:g} (guards.max_down)")
    lo, hi = bounds
    if not lo <= value <= hi:
        value = min(max(value, lo), hi)
        notes.append(f"clamped into the bounds [{lo:g}, {hi:g}]")
    return value


def _pair(current: KnobValue, target: KnobValue) -> tuple[list[float], list[float]]:
    """Current and target as lists of one number per group, a single number broadcast."""
    cur = [float(v) for v in current] if isinstance(current, list) else [float(current)]
    tgt = [float(v) for v in target] if isinstance(target, list) else [float(target)]
    n = max(len(cur), len(tgt))
    return (cur * n if len(cur) == 1 else cur), (tgt * n if len(tgt) == 1 else tgt)


def _bounds(spec: KnobSpec, settings: Settings) -> tuple[float, float]:
    """The kernel's bounds intersected with the config's (``bounds.lr`` also covers ``lr[1]``)."""
    lo = -math.inf if spec.lo is None else spec.lo
    hi = math.inf if spec.hi is None else spec.hi
    extra = settings.bounds.get(spec.name) or settings.bounds.get(_family(spec.name))
    if extra is not None:
        lo, hi = max(lo, extra[0]), min(hi, extra[1])
    return lo, hi


def _same(current: float, new: float) -> bool:
    if current == 0:
        return new == 0
    return abs(new - current) < _SAME * abs(current)


def _no_change(spec: KnobSpec) -> str:
    return f"{spec.name} is already {format_value(spec.value)}: no change"


def _change_text(spec: KnobSpec, value: KnobValue) -> str:
    return f"{spec.name} {format_value(spec.value)} -> {format_value(value)}"


def _verdict(
    i: int,
    action: Action,
    spec: KnobSpec,
    status: VerdictStatus,
    value: KnobValue | None,
    reason: str,
) -> Verdict:
    return Verdict(
        index=i,
        knob=action.knob,
        status=status,
        requested=action,
        value=value,
        before=spec.value,
        reason=reason,
    )


def _reject(i: int, action: Action, ctx: GuardContext, reason: str) -> Verdict:
    spec = ctx.knobs.get(action.knob)
    before = None if spec is None else spec.value
    return Verdict(
        index=i, knob=action.knob, status="rejected", requested=action, before=before, reason=reason
    )


class _Probe(Knob):
    """A published spec as a knob without bounds, to run the kernel's type rules on it."""

    def __init__(self, spec: KnobSpec) -> None:
        super().__init__(spec.name, kind=spec.kind, scale=spec.scale)
        self._value: Any = spec.value
        self.groups = spec.groups

    def get(self) -> KnobValue:
        return self._value

    def _write(self, value: Any) -> None:
        self._value = value
