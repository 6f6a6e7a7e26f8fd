"""The proposing nodes of the tick graph: the LLM agents, and the rules (also their fallback).

Each is a plain function of the ``TickContext`` and the ``TickState``; neither sends
anything (the guards check the proposal, ``route`` sends it). The LLM call has its own node,
so a failure there is recorded with its reason and its cost before the rules take over.
"""

from __future__ import annotations

import logging
from typing import Literal

from autopilot.context import build_context
from autopilot.state import TickContext, TickState
from autopilot.tokens import Usage

logger = logging.getLogger(__name__)


def llm(ctx: TickContext, state: TickState) -> TickState:
    """Ask the LLM agents (analyst, planner); on any failure, say why and fall back."""
    step = state["step"]
    next_step = state.get("llm_next_step", 0)
    if step < next_step:
        return {"fallback_reason": f"cadence: the next LLM call is allowed at step {next_step}"}
    gap = ctx.settings.budget.min_steps_between_calls
    from autopilot.llm.errors import LLMUnavailable  # with the client: only in the AI modes

    try:
        proposal = ctx.llm.get().propose(build_context(ctx, state))
    except LLMUnavailable as exc:
        logger.warning("LLM not used at step %d: %s; using the rules", step, exc.reason)
        spent = exc.usage.model_dump(mode="json")
        update: TickState = {"fallback_reason": exc.reason, "llm_spent": spent}
        if exc.provider_failed:
            update["llm_next_step"] = step + gap
        return update
    look = max(gap, proposal.look_again_steps or 0)
    return {"proposal": proposal.model_dump(mode="json"), "llm_next_step": step + look}


def after_llm(state: TickState) -> Literal["guard", "rules"]:
    """An LLM proposal goes to the guards; without one, the rules propose."""
    return "guard" if state.get("proposal") else "rules"


def rules(ctx: TickContext, state: TickState) -> TickState:
    """The rule policy's proposal (also the fallback of the AI modes)."""
    proposal = ctx.rules.propose(build_context(ctx, state, table=False))
    spent = Usage.model_validate(state.get("llm_spent") or {})
    proposal = proposal.model_copy(
        update={"fallback_reason": state.get("fallback_reason"), "usage": spent}
    )
    return {"proposal": proposal.model_dump(mode="json")}


__all__ = ["after_llm", "llm", "rules"]
