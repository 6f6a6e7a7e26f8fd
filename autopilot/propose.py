"""The proposing nodes of the tick graph: the LLM agents, and the rules (also their fallback).

Each is a plain function of the ``TickContext`` and the ``TickState``; neither sends
anything (the guards check the proposal, ``route`` sends it). The LLM call never runs inside
a tick: ``llm`` starts it in ``ctx.llm_calls`` and a later tick takes its outcome, judged then
with the run as it is at that tick (``autopilot.llm_calls``). An urgent diagnosis is
answered by the rules in the tick that found it. A call's failure is recorded with its
reason and its cost before the rules take over; an answer left with nothing to answer
(stale), or a call lost to a restart, is recorded as such and dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from autopilot.context import build_context
from autopilot.decisions import DecisionRecord
from autopilot.diagnoses import Diagnosis
from autopilot.llm_calls import Ask, CallStatus, LLMCall, Settled, ask_id, call_record, is_urgent
from autopilot.proposals import Proposal
from autopilot.state import TickContext, TickState
from autopilot.tokens import Usage

logger = logging.getLogger(__name__)


def llm(ctx: TickContext, state: TickState) -> TickState:
    """Take the outcome of the LLM call in flight, or start one; never wait for it.

    An urgent diagnosis goes to the rules at once (the LLM is asked too when it is free,
    and its answer is judged when it comes, in the first tick after it settled, urgent or
    not)."""
    update: TickState = {}
    ask = state.get("llm_ask")
    if ask is not None and not ctx.llm_calls.holds(ask["id"]):
        _record(ctx, state, ask, "lost", note=_lost_note(ask))
        update["llm_ask"] = ask = None
    fresh = [Diagnosis.model_validate(d) for d in state.get("diagnoses", [])]
    urgent = next((d for d in fresh if is_urgent(d)), None)
    if urgent is not None and ask is not None and ctx.llm_calls.settled(ask["id"]):
        # the rules answered when it was found; an answer that waited for a tick without an
        # urgent diagnosis would wait for ever while the problem lasts
        settled = ctx.llm_calls.take(ask["id"])
        if settled is not None:
            return {**update, **_judge(ctx, state, ask, settled)}
    if urgent is not None:
        started = {} if ask is not None else _start(ctx, state)
        reason = _urgent_reason(urgent, ask, started)
        return {**update, **started, "fallback_reason": reason, "urgent": True}
    if ask is not None:
        settled = ctx.llm_calls.take(ask["id"])
        if settled is None:
            return {"outcome": "waiting for the LLM"}
        return {**update, **_judge(ctx, state, ask, settled)}
    if fresh:
        return {**update, **_start(ctx, state), "outcome": "waiting for the LLM"}
    return update


def after_llm(state: TickState) -> Literal["guard", "rules", "__end__"]:
    """An LLM answer goes to the guards; an urgent diagnosis or a failed call to the rules;
    a call started or still in flight ends the tick."""
    if state.get("proposal"):
        return "guard"
    return "rules" if state.get("fallback_reason") and state.get("diagnoses") else "__end__"


def rules(ctx: TickContext, state: TickState) -> TickState:
    """The rule policy's proposal (also the fallback of the AI modes)."""
    proposal = ctx.rules.propose(build_context(ctx, state, table=False))
    spent = Usage.model_validate(state.get("llm_spent") or {})
    proposal = proposal.model_copy(
        update={
            "fallback_reason": state.get("fallback_reason"),
            "urgent": bool(state.get("urgent")),
            "usage": spent,
        }
    )
    return {"proposal": proposal.model_dump(mode="json")}


# -- starting a call --------------------------------------------------------------------
def _start(ctx: TickContext, state: TickState) -> TickState:
    """Start the call for this tick's diagnoses, when the cadence allows one."""
    step, next_step = state["step"], state.get("llm_next_step", 0)
    if step < next_step:
        return {}
    ask: Ask = {
        "id": ask_id(state.get("segment"), step),
        "step": step,
        "segment": state.get("segment"),
        "diagnoses": list(state.get("diagnoses", [])),
    }
    if not ctx.llm_calls.start(ask["id"], build_context(ctx, state)):
        return {}  # a call that no tick remembers is still in flight
    logger.info("step %d: the LLM is asked (%s); the tick goes on", step, ask["id"])
    return {"llm_ask": ask}


def _urgent_reason(urgent: Diagnosis, ask: Ask | None, started: TickState) -> str:
    head = f"urgent: {urgent.kind} ({urgent.severity}) is answered by the rules at once"
    if started:
        return f"{head}; the LLM is asked too, its answer is judged when it comes"
    if ask is not None:
        return f"{head}; the LLM call asked at step {ask['step']} is still in flight"
    return f"{head}; the LLM is not asked (between calls)"


# -- taking its outcome -----------------------------------------------------------------
def _judge(ctx: TickContext, state: TickState, ask: Ask, settled: Settled) -> TickState:
    """The outcome of ``ask``, judged with this tick's run: an answer goes to the guards
    while a diagnosis of its kinds is present; a failure goes to the rules while one is
    still undecided; anything else is recorded and dropped."""
    step = state["step"]
    current = _current(state, ask, "present")
    update: TickState = {"llm_ask": None}
    if settled.proposal is not None:
        look = max(
            ctx.settings.budget.min_steps_between_calls, settled.proposal.look_again_steps or 0
        )
        update["llm_next_step"] = step + look
        if not current:
            _record(ctx, state, ask, "stale", settled=settled, note=_stale_note(ask, step))
            return update
        return {
            **update,
            "proposal": settled.proposal.model_dump(mode="json"),
            "diagnoses": current,
            "llm_call": call_record(ask, "answered"),
        }
    logger.warning("LLM not used for %s: %s; using the rules", ask["id"], settled.reason)
    if settled.provider_failed:
        update["llm_next_step"] = step + ctx.settings.budget.min_steps_between_calls
    undecided = _current(state, ask, "diagnoses")
    if not undecided:
        _record(ctx, state, ask, "failed", settled=settled, note=_failed_note(ask))
        return update
    return {
        **update,
        "fallback_reason": settled.reason,
        "llm_spent": settled.usage.model_dump(mode="json"),
        "diagnoses": undecided,
        "llm_call": call_record(ask, "failed"),
    }


def _current(state: TickState, ask: Ask, key: Literal["present", "diagnoses"]) -> list[Any]:
    """This tick's diagnoses (``key``) of the kinds ``ask`` was about, in this run segment."""
    if ask.get("segment") != state.get("segment"):
        return []
    kinds = {d.get("kind") for d in ask["diagnoses"]}
    return [d for d in state.get(key, []) if d.get("kind") in kinds]


def _record(
    ctx: TickContext,
    state: TickState,
    ask: Ask,
    status: CallStatus,
    *,
    note: str,
    settled: Settled | None = None,
) -> None:
    """Record a call that leads to no decision (lost, stale, failed with nothing left to
    answer), once: its id is derived from the ask's."""
    record_id = f"{ask['id']}-{status}"
    if ctx.log.has(record_id):
        return  # a tick re-run after a crash
    proposal = settled.proposal if settled is not None else None
    record = DecisionRecord(
        id=record_id,
        step=state["step"],
        time=time.time(),
        mode=ctx.mode,
        diagnoses=[Diagnosis.model_validate(d) for d in ask["diagnoses"]],
        proposer=proposal.proposer if proposal else None,
        prompt_version=proposal.prompt_version if proposal else None,
        fallback_reason=settled.reason if settled is not None else None,
        usage=_usage(proposal, settled),
        proposal=proposal,
        route="none",
        # a provider's one-time note (a refused format) must not be lost with a dropped call
        note="; ".join(filter(None, [note, proposal.provider_note if proposal else None])),
        llm_call=LLMCall.model_validate(call_record(ask, status)),
    )
    ctx.log.append(record)
    logger.info("step %d: %s", state["step"], note)


def _usage(proposal: Proposal | None, settled: Settled | None) -> Usage:
    if proposal is not None:
        return proposal.usage
    return settled.usage if settled is not None else Usage()


def _lost_note(ask: Ask) -> str:
    return (
        f"the LLM call asked at step {ask['step']} ({ask['id']}) was lost: no thread of "
        "this autopilot holds it (it restarted while the call was in flight)"
    )


def _stale_note(ask: Ask, step: int) -> str:
    kinds = ", ".join(str(d.get("kind")) for d in ask["diagnoses"])
    return (
        f"stale: the LLM's answer asked at step {ask['step']} came at step {step}, when no "
        f"{kinds} was diagnosed any more; dropped"
    )


def _failed_note(ask: Ask) -> str:
    return (
        f"the LLM call asked at step {ask['step']} failed, and its diagnoses were already "
        "decided; nothing left for the rules to answer"
    )


__all__ = ["after_llm", "llm", "rules"]
