"""The online tuner in the tick graph: segments of one run, each a trial of the task's study.

```
observe -> evaluate -> diagnose -> score -+-> tune -> guard -> route   (a segment opens)
                                          +-> llm | rules | route | END (as before)
```

A **segment** is one trial: ``tune`` asks TPE for factors (``autopilot.policies.tune``) and
the proposal goes through the guards and ``route`` like any other (the review queue in
``suggest``, the kernel in ``auto``). ``score`` runs on every due tick after ``diagnose``:
once the Effects machinery has measured the trial's change (its decision record names the
trial; the effect record is joined to it), the trial is told ``change_rel``. In ``auto`` a
trial is kept when it measured ``better`` and at least the median of the run's earlier
trials (the projection's bias is common to them all, see ``_beats_median``); any other is
undone (``autopilot.tune_undo``): a ``worse`` one by a rewind to the segment's start
snapshot when that snapshot's key metric beats the segment's end by ``evaluate.worse_rel``
(weights, optimizer, scheduler and knob values come back), else, like a ``neutral`` one, by
setting the knob back, keeping the weights. ``autopilot.effects`` never rolls a tuner's change back
itself. In ``suggest`` a trial is told its value and left to the person who approved it, as
a rule's change is.

When a tick goes to the tuner: ``tune.enabled`` in ``suggest`` or ``auto`` (the AI modes
keep their LLM: ``tune.enabled`` is ignored there, with a warning), no segment open, the
run past one horizon (a baseline needs a trend) and at least one horizon from its planned
end (a trial there could not be measured), and nothing present but a plateau or an
oscillation (or nothing at all). A divergence, an overfitting, an imbalance, a reflex, a
collapsed lr (the rules restore it) or memory's start plan goes to the rules as without the
tuner; a divergence during a segment also tells its trial ``-1.0`` (what
``autopilot.evaluate`` scores a non-finite result), and the rules roll the change back. A
plateau or oscillation is the tuner's alone: while no segment may open, it waits. A healthy
run is tuned until ``tune.patience`` trials in a row were undone, then left as it was
started (until it stalls): every move on a good start risks more than it can gain.

No trial stays ``RUNNING``: one never measured within its deadline, or whose run ended, is
failed with the reason; on the first tick of a process the trials of this run left running
by an autopilot that stopped, except the open segment's, are failed too. The segment lives
in ``TickState["tune"]`` (plain JSON), so a restarted watcher goes on measuring it.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import replace
from typing import Any, Literal

from autopilot import nodes, tune_undo
from autopilot.config import AUTO_MODES
from autopilot.decisions import DecisionView, EffectRecord
from autopilot.guards import Verdict, check
from autopilot.policies.tune import Asked, TunePolicy
from autopilot.state import TickContext, TickState, tick_kernel
from kernel.knobs import knob_family
from memory.tuner import RUN_ID

logger = logging.getLogger(__name__)

TUNE_MODES = ("suggest", "auto")
TUNABLE = frozenset({"plateau", "oscillation"})
"""The diagnoses the tuner answers; any other goes to the rules."""
DIVERGED = -1.0
"""The value of a trial whose run diverged during its segment."""
_GIVE_UP = 3
"""Horizons after which a trial's change that was applied but never measured is failed
(``autopilot.effects`` drops such a baseline then)."""
_warned: set[str] = set()


def enabled(ctx: TickContext) -> bool:
    """Whether the tuner proposes in this context (see the module)."""
    if not ctx.settings.tune.enabled:
        return False
    if ctx.mode not in TUNE_MODES:
        if ctx.mode not in _warned:
            _warned.add(ctx.mode)
            logger.warning("tune.enabled is ignored in mode %s (suggest and auto only)", ctx.mode)
        return False
    return True


def after_score(
    ctx: TickContext, state: TickState
) -> Literal["tune", "llm", "rules", "route", "__end__"]:
    """To the tuner when it may open a segment; a plateau or oscillation while it may not
    (a segment is open, or the last one's undo settles) ends the tick: they are the tuner's
    to answer. Anything else routes as ``nodes.after_diagnose`` does."""
    if enabled(ctx):
        found = [*state.get("present", []), *state.get("diagnoses", [])]
        if all(_tunable(d) for d in found):
            return "tune" if _may_open(ctx, state) and _has_cause(ctx, state) else "__end__"
    return nodes.after_diagnose(ctx, state)


def _tunable(diagnosis: dict[str, Any]) -> bool:
    """Whether the tuner answers ``diagnosis``: a plateau or an oscillation, except a
    plateau of a collapsed lr, which the rules restore to the value it fell from (a move
    no bounded trial reaches, and one the run itself trained at)."""
    evidence = diagnosis.get("evidence") or {}
    return diagnosis.get("kind") in TUNABLE and not evidence.get("lr_collapsed")


def _segment(state: TickState) -> dict[str, Any] | None:
    return (state.get("tune") or {}).get("open")


def _horizon(ctx: TickContext) -> int:
    return ctx.settings.evaluate.horizon_steps


def _may_open(ctx: TickContext, state: TickState) -> bool:
    tune, step = state.get("tune") or {}, state["step"]
    if tune.get("open") is not None or step < tune.get("next_step", _horizon(ctx)):
        return False
    kernel = tick_kernel(state)
    if kernel is None or kernel.freeze != "off" or (state.get("freeze") or "off") != "off":
        return False
    last = kernel.max_steps
    if last is not None and step + _horizon(ctx) + ctx.settings.cadence.tick_every_steps >= last:
        return False  # its change could not be measured before the run ends
    return step >= _cooled_down(ctx, state)


def _has_cause(ctx: TickContext, state: TickState) -> bool:
    """Whether the tuner has a reason to try a change: a plateau or an oscillation, or,
    on a healthy tick, fewer than ``tune.patience`` trials in a row undone (a run whose
    every move buys nothing is left as it was started, until it stalls)."""
    misses = int((state.get("tune") or {}).get("misses", 0))
    return bool(state.get("diagnoses")) or misses < ctx.settings.tune.patience


def _cooled_down(ctx: TickContext, state: TickState) -> int:
    """The step from which the guards' cooldowns let a trial through (a trial they would
    reject is a trial wasted)."""
    guard_ctx, guards = nodes.guard_context(ctx, state), ctx.settings.guards
    knobs = {knob_family(k) for k in ctx.settings.tune.knobs}
    moved = [s for k, s in guard_ctx.last_change_step.items() if knob_family(k) in knobs]
    ready = [s + guards.cooldown_steps for s in moved]
    if guard_ctx.last_autopilot_step is not None:
        ready.append(guard_ctx.last_autopilot_step + guards.global_cooldown_steps)
    return max(ready, default=0)


# -- tune: open a segment ---------------------------------------------------------------
def tune(ctx: TickContext, state: TickState) -> TickState:
    """Ask a trial and propose its change; a trial the guards would reject is failed, one
    they would clamp or turn around is replaced by the factors they allow
    (``TunePolicy.replace``)."""
    kernel = tick_kernel(state)
    assert kernel is not None  # after_score checked
    policy = ctx.tuner.get(kernel)
    values = {k.name: k.value for k in kernel.knobs}
    kinds = [d["kind"] for d in state.get("diagnoses", [])]
    asked = policy.ask(values, reason=f"answers {', '.join(kinds)}" if kinds else "")
    asked, verdicts = _guarded(ctx, state, policy, asked, kinds)
    tune_state = dict(state.get("tune") or {})
    if not any(v.passed for v in verdicts):
        why = "; ".join(f"{v.knob}: {v.reason} ({v.rule})" for v in verdicts)
        policy.fail(asked.trial, f"the guards rejected it: {why}")
        tune_state["next_step"] = state["step"] + ctx.settings.guards.global_cooldown_steps
        return {"tune": tune_state, "proposal": None}
    horizon = _horizon(ctx)
    wait = ctx.settings.review.expire_after_steps if ctx.mode not in AUTO_MODES else 0
    tune_state["open"] = {
        "trial": asked.trial,
        "study": policy.study.study_name,
        "run_id": policy.run_id,
        "segment": state.get("segment"),
        "asked_step": state["step"],
        "deadline": state["step"] + wait + _GIVE_UP * horizon,
        "factors": asked.factors,
    }
    ctx.tuner.open_trial = asked.trial
    logger.info("step %d: %s", state["step"], asked.proposal.diagnosis)
    return {"tune": tune_state, "proposal": asked.proposal.model_dump(mode="json")}


def _guarded(
    ctx: TickContext, state: TickState, policy: TunePolicy, asked: Asked, kinds: list[str]
) -> tuple[Asked, list[Verdict]]:
    """The trial whose factors pass the guards as sampled, and the guards' verdicts."""
    proposal = asked.proposal.model_copy(update={"kind": kinds[0] if kinds else None})
    verdicts = check(proposal, nodes.guard_context(ctx, state), ctx.settings)
    factors = _allowed(asked.factors, verdicts)
    if factors is None:
        return replace(asked, proposal=proposal), verdicts
    why = "; ".join(f"{v.knob}: {v.reason} ({v.rule})" for v in verdicts if v.rule)
    again = policy.replace(asked.trial, factors, why=why)
    proposal = again.proposal.model_copy(update={"kind": proposal.kind})
    verdicts = check(proposal, nodes.guard_context(ctx, state), ctx.settings)
    return replace(again, proposal=proposal), verdicts


def _allowed(factors: dict[str, float], verdicts: list[Verdict]) -> dict[str, float] | None:
    """The factors the guards would let through, when they differ from ``factors``: a
    clamped one as clamped, and one that moves a knob the way a diagnosis forbids
    (``direction``: no lr raise during an oscillation) mirrored (``1/f``), so the trial is
    the move the run may make rather than a failure; ``None`` when nothing differs."""
    allowed, changed = dict(factors), False
    for v in verdicts:
        if v.knob not in factors:
            continue
        if v.status == "clamped" and isinstance(v.value, float) and isinstance(v.before, float):
            if v.before > 0:
                allowed[v.knob], changed = v.value / v.before, True
        elif v.status == "rejected" and v.rule == "direction":
            allowed[v.knob], changed = 1.0 / factors[v.knob], True
    return allowed if changed else None


def after_tune(state: TickState) -> Literal["guard", "__end__"]:
    return "guard" if state.get("proposal") else "__end__"


# -- score: measure the open segment ------------------------------------------------------
def score(ctx: TickContext, state: TickState) -> TickState:
    """Tell the open segment's trial its measured value (and undo a worse change), or fail
    it once it can no longer be measured."""
    kernel = tick_kernel(state)
    if not enabled(ctx) or kernel is None:
        return {}
    segment = _segment(state)
    if segment is None and not ctx.tuner.swept and ctx.tuner.peek() is None:
        return {}  # nothing to sweep before this process has tuned anything
    policy = ctx.tuner.get(kernel)
    if not ctx.tuner.swept:
        keep = [segment["trial"]] if segment is not None else []
        policy.stored.fail_stale(
            policy.run_id, keep=keep, reason="left running by an autopilot that stopped"
        )
        ctx.tuner.swept = True
    if segment is None:
        return {}
    ctx.tuner.open_trial = segment["trial"]
    settled = _settle(ctx, state, policy, segment)
    if settled is None:
        return {}
    ctx.tuner.open_trial = None
    tune_state = dict(state.get("tune") or {})
    next_step, kept = settled
    misses = int(tune_state.get("misses", 0))
    if kept is not None:
        misses = 0 if kept else misses + 1
    return {"tune": {**tune_state, "open": None, "next_step": next_step, "misses": misses}}


def _settle(
    ctx: TickContext, state: TickState, policy: TunePolicy, segment: dict[str, Any]
) -> tuple[int, bool | None] | None:
    """Once the segment is settled: the step from which the next may open, and whether its
    change was kept (``None``: never measured); ``None`` while it is still measured."""
    step, trial = state["step"], int(segment["trial"])
    if segment["run_id"] != policy.run_id or segment.get("segment") != state.get("segment"):
        policy.fail(trial, "its run ended before the trial was measured")
        return step, None
    # no effect can be measured before a horizon has passed: the log is not read until then
    due = step >= int(segment["asked_step"]) + _horizon(ctx)
    view = _decision_of(ctx, trial) if due else None
    if view is not None and view.effects:
        return _told(ctx, state, policy, segment, view)
    if any(d["kind"] == "divergence" for d in state.get("present", [])):
        if _running(policy, trial):
            policy.tell(trial, DIVERGED, verdict="worse", diverged_at=step)
        logger.warning("tuner trial %d: the run diverged; the rules take over", trial)
        return step + _horizon(ctx), False
    if step > int(segment["deadline"]):
        policy.fail(trial, f"not measured by step {segment['deadline']} (never applied?)")
        return step, None
    return None


def _decision_of(ctx: TickContext, trial: int) -> DecisionView | None:
    """The decision that proposed ``trial``, with its measured effects."""
    for view in reversed(ctx.log.read()):
        proposal = view.record.proposal
        if proposal is not None and proposal.proposer == "tune" and proposal.trial == trial:
            return view
    return None


def _running(policy: TunePolicy, trial: int) -> bool:
    from optuna.trial import TrialState

    trials = policy.study.get_trials(deepcopy=False)
    return trial < len(trials) and trials[trial].state == TrialState.RUNNING


def _told(
    ctx: TickContext,
    state: TickState,
    policy: TunePolicy,
    segment: dict[str, Any],
    view: DecisionView,
) -> tuple[int, bool]:
    """Tell the trial the mean effect of its commands; undo one not kept (auto modes,
    ``autopilot.tune_undo``)."""
    trial, effects = int(segment["trial"]), view.effects
    value = sum(e.change_rel for e in effects) / len(effects)
    first = min(effects, key=lambda e: e.applied_step)
    verdict = _verdict(effects)
    keep = verdict == "better" and _beats_median(policy, value)
    undo: tuple[str, str] | None = None
    if not keep and ctx.mode in AUTO_MODES:
        undo = tune_undo.undo(ctx, state, trial, effects, verdict=verdict)
    if _running(policy, trial):
        policy.tell(
            trial,
            value if math.isfinite(value) else DIVERGED,
            verdict=verdict,
            applied_step=first.applied_step,
            measured_at_step=first.measured_at_step,
            kept=keep,
            undo=undo[0] if undo else None,
            undo_command_id=undo[1] if undo else None,
        )
        logger.info("tuner trial %d: %+.1f%% vs projection (%s)", trial, 100 * value, verdict)
    if undo is not None:  # the undone run needs a trend of its own before the next trial
        return state["step"] + max(_horizon(ctx) // 2, ctx.settings.guards.cooldown_steps), keep
    every = ctx.settings.tune.segment_steps or _horizon(ctx)
    return max(state["step"], first.applied_step + every), keep


def _beats_median(policy: TunePolicy, value: float) -> bool:
    """Whether ``value`` is at least the median of this run's earlier trials' values.

    The projection every change is measured against (``autopilot.evaluate``) runs at half
    the trend's slope, so on a curve that keeps its slope every change measures a few percent
    ``better``, a cut of a too-low lr included. That bias is common to the run's trials, so a
    trial is kept only when it also ranks in the upper half of them (TPE, which ranks, is not
    misled by it)."""
    from optuna.trial import TrialState

    earlier = [
        float(t.value)
        for t in policy.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and t.user_attrs.get(RUN_ID) == policy.run_id
    ]
    return not earlier or value >= statistics.median(earlier)


def _verdict(effects: list[EffectRecord]) -> str:
    verdicts = {e.verdict for e in effects}
    return "worse" if "worse" in verdicts else "neutral" if "neutral" in verdicts else "better"


def close(ctx: TickContext) -> None:
    """Fail the open segment's trial when its run has ended (called when the autopilot
    closes: a watcher stopped mid-run keeps its segment for the next one)."""
    policy, trial = ctx.tuner.peek(), ctx.tuner.open_trial
    if policy is None or trial is None:
        return
    from kernel import read_kernel_state

    kernel = read_kernel_state(ctx.run_dir)
    if kernel is None or kernel.status in ("closed", "crashed"):
        policy.fail(trial, "the run ended before the trial was measured")
        ctx.tuner.open_trial = None


__all__ = ["TUNABLE", "after_score", "after_tune", "close", "enabled", "score", "tune"]
