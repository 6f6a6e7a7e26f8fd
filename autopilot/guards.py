"""Guards: the hard limits between a policy's proposal and the kernel.

``check`` turns each action of a proposal into a ``Verdict`` (allowed, clamped or rejected,
with the reason, the rule that decided and the final absolute value); ``commands_for`` turns
the verdicts that pass into kernel commands. Nothing here raises for a bad proposal:
verdicts are data.

The rules, in the order they are applied (each verdict names its ``rule``):

* ``freeze``: the run is frozen (``freeze prod`` or ``replay``): every action is rejected;
* ``noop``: the proposal's confidence is below ``guards.noop_threshold``: no change;
* ``global_cooldown``: an autopilot change is younger than ``guards.global_cooldown_steps``;
* per action: ``unknown_knob``; ``same_family``, a second action on the same knob (``lr``
  and ``lr[1]`` count as the same); ``cooldown``, a knob changed (by anyone, a human too)
  less than ``guards.cooldown_steps`` ago; ``invalid_value``, a value of the wrong type (the
  kernel's own validation);
* a multiplier is resolved against the knob's true current value in ``kernel.json``;
* ``max_step``: the change is capped to ``[max_down, max_up]`` x the current value (not from
  0: turning gradient clipping on is bounded by the bounds only);
* ``cumulative``: the autopilot's own changes to a knob family may not move it, in total,
  beyond ``[max_total_down, max_total_up]`` x its starting value within
  ``guards.total_window_steps``; a change by a person or one measured ``better`` starts the
  count afresh, and a rollback is never held back by it;
* ``bounds``: the value is clamped into the kernel's bounds intersected with the config's
  ``bounds`` (``knob_bounds``, which also gives the prompt its bounds);
* ``condemned``: a rollback that would restore a value set by a change measured ``worse``
  is rejected (it would bring that change back);
* ``direction``: a change that moves a knob the way a diagnosis forbids (no lr increase
  while diverging or oscillating, no weight-decay cut while overfitting: the table in
  ``autopilot.directions``) is rejected, judged on the final value, for the proposal's
  ``kind`` and the kinds the tick diagnosed; an action a person approved (an edited
  approval, source ``human``) may push either way;
* ``no_change``: a change that leaves the value as it is is rejected; ``max_actions``:
  actions beyond ``guards.max_actions`` that would pass are dropped.

Example:
    >>> from kernel import KnobSpec
    >>> ctx = GuardContext(step=500, knobs={"lr": KnobSpec(name="lr", kind="float",
    ...     lo=1e-7, hi=10.0, value=0.1)})
    >>> p = Proposal(proposer="rules", diagnosis="plateau",
    ...              actions=[Action(knob="lr", multiplier=5.0)])
    >>> v = check(p, ctx, Settings())[0]
    >>> v.status, v.value, v.rule
    ('clamped', 0.2, 'max_step')
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import Settings
from autopilot.directions import against
from autopilot.guard_context import AUTOPILOT_SOURCES, GuardContext
from autopilot.proposals import REWIND, Action, Proposal
from kernel import Command, Knob, KnobError, KnobSpec, KnobValue, format_value
from kernel.commands import Source
from kernel.knobs import knob_family

VerdictStatus = Literal["allowed", "clamped", "rejected"]
GuardRule = Literal[
    "freeze",
    "noop",
    "global_cooldown",
    "unknown_knob",
    "same_family",
    "cooldown",
    "invalid_value",
    "max_step",
    "cumulative",
    "bounds",
    "condemned",
    "direction",
    "no_change",
    "max_actions",
    "rewind",
]
"""The guard that decided a verdict (see the module's rules)."""
_SAME = 1e-9  # a relative change below this is no change


class Verdict(BaseModel):
    """What the guards decided about one action of a proposal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    """The action's position in the proposal."""
    knob: str
    status: VerdictStatus
    rule: GuardRule | None = None
    """The guard that rejected or clamped the action; ``None`` when it passed untouched."""
    requested: Action
    """The action as the policy proposed it (a clamped verdict keeps the original here)."""
    value: KnobValue | None = None
    """The absolute value to send; ``None`` when rejected."""
    before: KnobValue | None = None
    """The knob's value in ``kernel.json`` when the guards ran."""
    bounds: tuple[float, float] | None = None
    """The bounds the value was judged under, when the config's are narrower than the
    kernel's (the command carries them, so the kernel refuses a result outside them)."""
    reason: str

    @property
    def passed(self) -> bool:
        """Whether this verdict becomes a command (allowed or clamped)."""
        return self.status != "rejected"


def knob_bounds(spec: KnobSpec, settings: Settings) -> tuple[float, float]:
    """The bounds a change to ``spec`` is judged under: the kernel's intersected with the
    config's ``[bounds]`` (``bounds.lr`` also covers ``lr[1]``). The one home of a knob's
    bounds: the guards enforce these and the prompt is told these.

    Example:
        >>> s = Settings.model_validate({"bounds": {"lr": [1e-4, 0.1]}})
        >>> knob_bounds(KnobSpec(name="lr[1]", kind="float", lo=1e-7, hi=10.0, value=0.01), s)
        (0.0001, 0.1)
    """
    lo = -math.inf if spec.lo is None else spec.lo
    hi = math.inf if spec.hi is None else spec.hi
    extra = settings.bounds.get(spec.name) or settings.bounds.get(knob_family(spec.name))
    if extra is not None:
        lo, hi = max(lo, extra[0]), min(hi, extra[1])
    return lo, hi


def bounded_spec(spec: KnobSpec, settings: Settings) -> KnobSpec:
    """``spec`` with ``knob_bounds`` as its bounds (what a policy is shown)."""
    if spec.kind == "bool":
        return spec
    lo, hi = knob_bounds(spec, settings)
    return spec.model_copy(
        update={"lo": None if lo == -math.inf else lo, "hi": None if hi == math.inf else hi}
    )


def check(
    proposal: Proposal,
    ctx: GuardContext,
    settings: Settings,
    *,
    by_person: Collection[int] = (),
) -> list[Verdict]:
    """The verdict on each action of ``proposal``, in order (see the module's rules).

    Args:
        by_person: indices of the actions a person approved as their own (edited in
            review): the ``direction`` guard lets them push either way. Every action of a
            ``human`` proposal counts as a person's.
    """
    blanket = _blanket_reason(proposal, ctx, settings)
    if blanket is not None:
        rule, why = blanket
        return [_reject(i, a, ctx, why, rule) for i, a in enumerate(proposal.actions)]
    verdicts: list[Verdict] = []
    first_of: dict[str, int] = {}
    for i, action in enumerate(proposal.actions):
        verdict = _check_action(i, action, ctx, settings, first_of)
        if verdict.passed:
            person = proposal.proposer == "human" or i in by_person
            verdict = _held(verdict, ctx, proposal.kind, person)
        if verdict.passed and sum(v.passed for v in verdicts) >= settings.guards.max_actions:
            why = f"guards.max_actions is {settings.guards.max_actions}: one decision changes "
            verdict = _reject(
                i, action, ctx, why + "at most that many knobs; dropped", "max_actions"
            )
        verdicts.append(verdict)
    return verdicts


def _held(verdict: Verdict, ctx: GuardContext, kind: str | None, person: bool) -> Verdict:
    """``verdict`` rejected when its final value restores a condemned value (a rollback) or
    moves against a diagnosis (unless a person approved it); else ``verdict``."""
    action = verdict.requested
    if action.op == "rewind":
        return verdict
    shown = f"{verdict.knob} {format_value(verdict.before)} -> {format_value(verdict.value)}"
    if action.rolls_back is not None:
        bad = ctx.condemned(verdict.knob, verdict.value)
        if bad is not None:
            why = (
                f"{shown} would restore the value set by {bad.command_id} at step {bad.step}, "
                "whose change was measured worse; a rollback never brings a condemned value back"
            )
            return _rejected(verdict, why, "condemned")
    wrong = None if person else against((kind, *ctx.diagnosed), verdict.knob, verdict.before,
                                         verdict.value)  # fmt: skip
    if wrong is None:
        return verdict
    why = (
        f"{shown} {wrong} (autopilot.directions); rejected unless a person approves it "
        "(edit the action in review, or `autopilot set`)"
    )
    return _rejected(verdict, why, "direction")


def _rejected(verdict: Verdict, reason: str, rule: GuardRule) -> Verdict:
    update = {"status": "rejected", "value": None, "bounds": None, "reason": reason, "rule": rule}
    return verdict.model_copy(update=update)


def command_id(source: str, proposal_id: str, index: int) -> str:
    """The id of the command for action ``index``: the same on every re-run of a decision."""
    return f"{source}-{proposal_id}-{index}"


def commands_for(
    verdicts: list[Verdict],
    *,
    source: Source,
    proposal_id: str,
    reason_prefix: str = "",
    decision_id: str | None = None,
    for_diagnosis: str | None = None,
    segment: int | None = None,
    proposed_by: Source | None = None,
) -> list[Command]:
    """Kernel commands for the verdicts that passed.

    A multiplier action stays a multiplier (the guarded factor), so the kernel scales the
    knob's value at the step it applies it: a value that moved since ``kernel.json`` was
    read (a scheduler) still changes by at most the guarded factor, and the kernel refuses a
    result outside the knob's bounds or the narrower bounds the verdict was judged under
    (``Command.bounds``). An absolute action is sent as the guarded value. What the command
    is for travels as data: ``decision_id``, ``for_diagnosis`` (the diagnosis kind), the run
    ``segment``, and ``intent="rollback"`` with ``rolls_back`` for an action that undoes a
    change; the reason is prose for people. ``proposed_by`` names whose idea a command
    ``source`` orders is (an autopilot's proposal a person approved): the id is derived
    from it, so an approved proposal's commands keep the ids of its proposer.

    Example:
        >>> v = Verdict(index=0, knob="lr", status="allowed", value=0.05, before=0.1,
        ...             requested=Action(knob="lr", multiplier=0.5), reason="lr 0.1 -> 0.05")
        >>> c = commands_for([v], source="rules", proposal_id="d-7", reason_prefix="plateau",
        ...                  decision_id="d-7", for_diagnosis="plateau")[0]
        >>> c.id, c.multiplier, c.intent, c.for_diagnosis
        ('rules-d-7-0', 0.5, 'set', 'plateau')
    """
    return [
        Command(
            id=command_id(proposed_by or source, proposal_id, v.index),
            source=source,
            proposed_by=proposed_by,
            **_change(v),
            proposal_id=proposal_id,
            decision_id=decision_id,
            for_diagnosis=for_diagnosis,
            segment=segment,
            bounds=v.bounds,
            **_intent(v.requested),
            reason="; ".join(p for p in (reason_prefix, v.requested.reason, v.reason) if p)[:4000],
        )
        for v in verdicts
        if v.passed
    ]


def _intent(action: Action) -> dict[str, Any]:
    if action.op == "rewind":
        return {"intent": "rewind"}
    if action.rolls_back is None:
        return {"intent": "set"}
    return {"intent": "rollback", "rolls_back": action.rolls_back}


def _change(verdict: Verdict) -> dict[str, Any]:
    """``{"multiplier": m}`` for a multiplier action with one factor, else ``{"value": v}``
    (with the knob); the op and target of a rewind."""
    action = verdict.requested
    if action.op == "rewind":
        return {"op": "rewind", "to": action.to, "to_step": action.to_step}
    return {"knob": verdict.knob, **_knob_change(verdict)}


def _knob_change(verdict: Verdict) -> dict[str, Any]:
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


def _blanket_reason(
    proposal: Proposal, ctx: GuardContext, settings: Settings
) -> tuple[GuardRule, str] | None:
    """The rule and reason that reject every action of the proposal at once, or ``None``."""
    if ctx.freeze != "off":
        return "freeze", (
            f"the run is frozen (freeze {ctx.freeze}): the kernel ignores knob changes "
            "until `autopilot freeze off`"
        )
    threshold = settings.guards.noop_threshold
    if proposal.confidence < threshold:
        return "noop", (
            f"confidence {proposal.confidence:g} below the noop threshold {threshold:g}: no change"
        )
    last, cooldown = ctx.last_autopilot_step, settings.guards.global_cooldown_steps
    if last is not None and ctx.step - last < cooldown:
        left = cooldown - (ctx.step - last)
        return "global_cooldown", (
            f"the autopilot changed the run at step {last}; guards.global_cooldown_steps is "
            f"{cooldown}, so {left} more steps to wait (now step {ctx.step})"
        )
    return None


def _check_action(
    i: int, action: Action, ctx: GuardContext, settings: Settings, first_of: dict[str, int]
) -> Verdict:
    if action.op == "rewind":
        return _check_rewind(i, action, ctx, settings, first_of)
    spec = ctx.knobs.get(action.knob)
    if spec is None:
        known = ", ".join(sorted(ctx.knobs)) or "none"
        why = f"unknown knob '{action.knob}'; this run's knobs are: {known}"
        return _reject(i, action, ctx, why, "unknown_knob")
    family = knob_family(action.knob)
    if family in first_of:
        why = f"merged into action {first_of[family]} (the first action on {family} wins)"
        return _reject(i, action, ctx, why, "same_family")
    first_of[family] = i
    wait = _cooldown_reason(action.knob, ctx, settings)
    if wait is not None:
        return _reject(i, action, ctx, wait, "cooldown")
    return _resolve(i, action, spec, ctx, settings)


def _check_rewind(
    i: int, action: Action, ctx: GuardContext, settings: Settings, first_of: dict[str, int]
) -> Verdict:
    """A rewind needs a snapshot it can name (``kernel.json`` lists them), must come first
    (the changes after it apply to the restored state), one per decision, and waits out
    ``guards.cooldown_steps`` after the last rewind (a reflex's too)."""
    if REWIND in first_of:
        return _reject(i, action, ctx, "one rewind per decision; dropped", "same_family")
    first_of[REWIND] = i
    if i != 0:
        why = "a rewind must be the first action (the changes after it apply to its state)"
        return _reject(i, action, ctx, why, "rewind")
    snapshots = ctx.snapshots
    if not snapshots:
        why = "the kernel keeps no snapshot yet (KernelSettings.snapshot_every_steps)"
        return _reject(i, action, ctx, why, "rewind")
    if action.to == "best" and not any(s.best for s in snapshots):
        return _reject(i, action, ctx, "no snapshot holds a best value of the key metric", "rewind")
    if action.to == "step" and not any(s.step <= (action.to_step or 0) for s in snapshots):
        why = f"no snapshot is kept from step {action.to_step} or earlier"
        return _reject(i, action, ctx, why, "rewind")
    last, cooldown = ctx.last_rewind_step, settings.guards.cooldown_steps
    if last is not None and ctx.step - last < cooldown:
        why = (
            f"the run was rewound at step {last}; guards.cooldown_steps is {cooldown}, so "
            f"{cooldown - (ctx.step - last)} more steps to wait (now step {ctx.step})"
        )
        return _reject(i, action, ctx, why, "cooldown")
    kept = ", ".join(str(s.step) for s in snapshots)
    return Verdict(
        index=i,
        knob=REWIND,
        status="allowed",
        requested=action,
        reason=f"{action.describe()} (snapshots kept at steps {kept})",
    )


def _cooldown_reason(knob: str, ctx: GuardContext, settings: Settings) -> str | None:
    family = knob_family(knob)
    steps = [s for k, s in ctx.last_change_step.items() if knob_family(k) == family]
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


def _resolve(
    i: int, action: Action, spec: KnobSpec, ctx: GuardContext, settings: Settings
) -> Verdict:
    """Resolve, cap and clamp one action on a known knob outside its cooldown."""
    try:  # the kernel's own rules: types, list lengths, bools, a multiplier on 0
        target = _Probe(spec).resolve(action.value, action.multiplier)
    except KnobError as exc:
        return _verdict(
            i, action, spec, "rejected", None, f"{exc.knob} {exc.reason}", "invalid_value"
        )
    if isinstance(target, bool):
        if target == spec.value:
            return _verdict(i, action, spec, "rejected", None, _no_change(spec), "no_change")
        return _verdict(i, action, spec, "allowed", target, _change_text(spec, target))
    lo, hi = knob_bounds(spec, settings)
    if lo > hi:
        why = (
            f"the kernel's bounds [{spec.lo}, {spec.hi}] and bounds.{spec.name} in the config "
            f"do not overlap; fix bounds.{spec.name} in autopilot.toml"
        )
        return _verdict(i, action, spec, "rejected", None, why, "bounds")
    restoring = _restoring(action, ctx)
    up = math.inf if restoring else settings.guards.max_up
    limits = _Limits(
        step=(settings.guards.max_down, up),
        total=None if action.rolls_back or restoring else _total_limits(action.knob, ctx, settings),
        bounds=(lo, hi),
        off=EFFECTIVELY_OFF.get(knob_family(action.knob)),
    )
    verdict = _bounded(i, action, spec, target, limits)
    narrower = (lo, hi) != (
        -math.inf if spec.lo is None else spec.lo,
        math.inf if spec.hi is None else spec.hi,
    )
    return (
        verdict.model_copy(update={"bounds": (lo, hi)}) if narrower and verdict.passed else verdict
    )


def _restoring(action: Action, ctx: GuardContext) -> bool:
    """Whether ``action`` restores a value the run trained at: flagged so, an absolute
    number, and no larger than the largest value the run logged for the knob."""
    if not action.restores or not isinstance(action.value, float | int):
        return False
    peak = ctx.logged_peak.get(knob_family(action.knob))
    return peak is not None and not isinstance(action.value, bool) and action.value <= peak


@dataclass(frozen=True, kw_only=True)
class _Limits:
    """What bounds one numeric change: its relative step, the cumulative cap, the bounds."""

    step: tuple[float, float]
    total: tuple[float, float, str, str] | None
    """Factor range left to the cumulative guard, with the notes for capping down and up."""
    bounds: tuple[float, float]
    off: tuple[float, float] | None = None
    """``(below, ceiling)``: a value under ``below`` acts as off, and a change from it is
    not a relative step but is capped at ``ceiling``."""


EFFECTIVELY_OFF: dict[str, tuple[float, float]] = {"weight_decay": (1e-4, 1e-2)}
"""Per knob family, the value below which it does nothing at the scales it is used (a
weight decay of 1e-5 regularises as much as none), and the most it may be turned on to in
one change: capping a change from it to x2 would keep it off for good."""


def _total_limits(
    knob: str, ctx: GuardContext, settings: Settings
) -> tuple[float, float, str, str] | None:
    """The factors still open to ``knob``'s family under the cumulative guard (never
    narrower than "no further change in that direction"), or ``None`` without a drift."""
    g = settings.guards
    family = knob_family(knob)
    drift = ctx.drift(family, g.total_window_steps)
    if drift.changes == 0:
        return None
    so_far = (
        f"{family} is already at x{drift.factor:.3g} of {format_value(drift.start)} after "
        f"{drift.changes} autopilot change{'s' if drift.changes != 1 else ''} since step "
        f"{drift.since_step} with no measured improvement"
    )
    down = f"capped by guards.max_total_down ({g.max_total_down:g} in total): {so_far}"
    up = f"capped by guards.max_total_up ({g.max_total_up:g} in total): {so_far}"
    lo_f = min(1.0, g.max_total_down / drift.factor)
    hi_f = max(1.0, g.max_total_up / drift.factor)
    return lo_f, hi_f, down, up


def _bounded(i: int, action: Action, spec: KnobSpec, target: KnobValue, limits: _Limits) -> Verdict:
    current, wanted = _pair(spec.value, target)
    notes: list[tuple[GuardRule, str]] = []
    final = [_limit(c, t, limits, notes) for c, t in zip(current, wanted, strict=True)]
    text = " and ".join(dict.fromkeys(n for _, n in notes))
    rule = notes[-1][0] if notes else None
    if all(_same(c, f) for c, f in zip(current, final, strict=True)):
        why = (
            _no_change(spec)
            if not notes
            else (
                f"{action.describe()} would give {format_value(target)}; {text}; {_no_change(spec)}"
            )
        )
        return _verdict(i, action, spec, "rejected", None, why, rule or "no_change")
    value: KnobValue = final[0] if len(final) == 1 else final
    if not notes:
        return _verdict(i, action, spec, "allowed", value, _change_text(spec, value))
    wanted_text = f"{action.describe()} would give {format_value(target)}"
    why = f"{wanted_text}; {text}: {_change_text(spec, value)}"
    return _verdict(i, action, spec, "clamped", value, why, rule)


def _limit(
    current: float, target: float, limits: _Limits, notes: list[tuple[GuardRule, str]]
) -> float:
    """Cap ``target`` to the allowed relative step from ``current`` and to the cumulative
    guard's factors, then clamp it into the bounds."""
    value = target
    if limits.off is not None and abs(current) < limits.off[0] and value > current:
        ceiling = limits.off[1]  # turning on a knob that acts as off (a weight decay of 1e-5)
        if value > ceiling:
            value = ceiling
            notes.append(("max_step", f"capped at {ceiling:g} (turning on what acts as off)"))
    elif current != 0:  # from 0 there is no relative step to cap (e.g. enabling grad_clip)
        down, up = limits.step
        if value > current * up:
            value = current * up
            notes.append(("max_step", f"capped at x{up:g} (guards.max_up)"))
        elif value < current * down:
            value = current * down
            notes.append(("max_step", f"capped at x{down:g} (guards.max_down)"))
        if limits.total is not None:
            lo_f, hi_f, down_note, up_note = limits.total
            if value / current > hi_f:
                value = current * hi_f
                notes.append(("cumulative", up_note))
            elif value / current < lo_f:
                value = current * lo_f
                notes.append(("cumulative", down_note))
    lo, hi = limits.bounds
    if not lo <= value <= hi:
        value = min(max(value, lo), hi)
        notes.append(("bounds", f"clamped into the bounds [{lo:g}, {hi:g}]"))
    return value


def _pair(current: KnobValue, target: KnobValue) -> tuple[list[float], list[float]]:
    """Current and target as lists of one number per group, a single number broadcast."""
    cur = [float(v) for v in current] if isinstance(current, list) else [float(current)]
    tgt = [float(v) for v in target] if isinstance(target, list) else [float(target)]
    n = max(len(cur), len(tgt))
    return (cur * n if len(cur) == 1 else cur), (tgt * n if len(tgt) == 1 else tgt)


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
    rule: GuardRule | None = None,
) -> Verdict:
    return Verdict(
        index=i,
        knob=action.knob,
        status=status,
        rule=rule,
        requested=action,
        value=value,
        before=spec.value,
        reason=reason,
    )


def _reject(i: int, action: Action, ctx: GuardContext, reason: str, rule: GuardRule) -> Verdict:
    spec = ctx.knobs.get(action.knob)
    before = None if spec is None else spec.value
    return Verdict(
        index=i,
        knob=action.knob,
        status="rejected",
        rule=rule,
        requested=action,
        before=before,
        reason=reason,
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


__all__ = [
    "AUTOPILOT_SOURCES",
    "GuardContext",
    "GuardRule",
    "Verdict",
    "bounded_spec",
    "check",
    "command_id",
    "commands_for",
    "knob_bounds",
]
