"""The LLM policy: an analyst reads the run, a planner proposes knob changes.

Two calls per decision, each estimated, reserved against the budget, made, and charged
(failed attempts included):

1. the analyst reads the summary table, the detector alerts, the recent knob changes, and
   memory's lessons (at most ``memory.prompt_tokens`` of them), and answers an
   ``AnalystOutput``;
2. unless the analyst finds the run healthy, the planner reads that diagnosis (not the
   table), the knobs with their bounds and current values, and the recent changes with
   their effects, and answers a ``PlannerOutput``, which becomes the ``Proposal``.

``analyst_request`` and ``planner_request`` render each call exactly as it is sent;
``benchmarks/prompt_size.py`` measures them.

Nothing is clamped or dropped here: the guards check every action afterwards. Any failure
(no key, a budget cap, a provider error, invalid output) raises ``LLMUnavailable`` with a
one-line reason and the spend so far; the graph then falls back to the rules.

Example (needs a provider, hence skipped as a doctest):
    >>> policy = LLMPolicy(settings, run_dir)  # doctest: +SKIP
    >>> [a.describe() for a in policy.propose(ctx).actions]  # doctest: +SKIP
    ['lr x0.5']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from autopilot.budget import Budget, Estimate
from autopilot.config import Settings
from autopilot.errors import BudgetExceeded
from autopilot.llm import (
    ATTEMPTS,
    AnalystOutput,
    LLMClient,
    LLMError,
    LLMUnavailable,
    PlannerOutput,
    planner_output_for,
)
from autopilot.llm.client import LLMReply, Message
from autopilot.llm.formats import response_format_for
from autopilot.llm.schemas import ALL_VALUE_TYPES, ValueType
from autopilot.policies._base import PolicyContext
from autopilot.policies._prompt_fields import analyst_fields, planner_fields
from autopilot.proposals import Action, Proposal
from autopilot.tokens import Usage
from kernel import KnobSpec
from prompts import load_prompt

__all__ = ["LLMPolicy", "LLMUnavailable", "Request"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class Request(Generic[M]):
    """One call exactly as it is sent: the prompt's id, the messages, the reply's schema."""

    prompt_id: str
    messages: list[Message]
    schema: type[M]

    @property
    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` sent while the provider accepts JSON schemas."""
        return response_format_for(self.schema)

    @property
    def schema_text(self) -> str:
        """``response_format`` as it travels (compact JSON); providers bill it as input."""
        return json.dumps(self.response_format, separators=(",", ":"))


@dataclass(kw_only=True)
class _Spent:
    """What this decision's calls have consumed so far, and a provider's note if any."""

    usage: Usage
    note: str | None = None

    def record_fields(self) -> dict[str, Any]:
        """The proposal's fields for this spend."""
        return {"usage": self.usage, "provider_note": self.note}


class LLMPolicy:
    """The ``ai`` policy (see the module docstring).

    Args:
        settings: the provider (``llm``), prices, caps and ``guards.max_actions``.
        run_dir: the run directory, where the budget keeps this run's spend.
        client: a ready client (tests); by default one is built on first use from
            ``settings.llm`` and the key in ``$<llm.api_key_env>``.
        budget: the spend tracker; by default ``Budget(run_dir, settings)``.
    """

    name = "ai"

    def __init__(
        self,
        settings: Settings,
        run_dir: str | os.PathLike[str],
        *,
        client: LLMClient | None = None,
        budget: Budget | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._budget = budget or Budget(run_dir, settings)
        self._analyst = load_prompt("analyst")
        self._planner = load_prompt("planner")

    @property
    def prompt_version(self) -> str:
        return f"{self._analyst.id}+{self._planner.id}"

    def propose(self, ctx: PolicyContext) -> Proposal:
        """Ask the analyst, then (unless the run is healthy) the planner.

        Raises:
            LLMUnavailable: when no call can be made or one fails; carries the spend so far.
        """
        client = self._client_or_raise()
        spent = _Spent(usage=Usage())
        try:
            return self._propose(client, ctx, spent)
        except BudgetExceeded as exc:
            raise self._unavailable(f"budget: {exc.reason}", spent) from exc
        except LLMError as exc:
            raise self._unavailable(exc.message, spent, provider_failed=True) from exc
        except OSError as exc:  # a spend ledger that cannot be read or written
            raise self._unavailable(f"budget: spend ledger unusable: {exc}", spent) from exc

    def analyst_request(self, ctx: PolicyContext) -> Request[AnalystOutput]:
        """The analyst's call for ``ctx``, as ``propose`` sends it."""
        fields = analyst_fields(ctx, memory_tokens=self._settings.memory.prompt_tokens)
        messages = self._analyst.messages(**fields)
        return Request(prompt_id=self._analyst.id, messages=messages, schema=AnalystOutput)

    def planner_request(
        self, ctx: PolicyContext, analysis: AnalystOutput
    ) -> Request[PlannerOutput]:
        """The planner's call for ``ctx`` and the analyst's diagnosis, as ``propose`` sends it."""
        fields = planner_fields(ctx, analysis, self._settings.guards.max_actions)
        messages = self._planner.messages(**fields)
        # the run's knob names, as an enum, and the types their values take
        schema = planner_output_for(tuple(ctx.knobs), _value_types(ctx.knobs.values()))
        return Request(prompt_id=self._planner.id, messages=messages, schema=schema)

    def _propose(self, client: LLMClient, ctx: PolicyContext, spent: _Spent) -> Proposal:
        ahead = self._estimate(self.planner_request(ctx, _ANY_ANALYSIS))
        analysis = self._call(client, self.analyst_request(ctx), spent, also_held=ahead)
        if analysis.kind == "healthy":
            return Proposal(
                proposer="ai",
                diagnosis=analysis.describe()[:2000],
                kind=analysis.kind,
                confidence=analysis.confidence,
                reasoning=_evidence(analysis),
                prompt_version=self._analyst.id,
                **spent.record_fields(),
            )
        plan = self._call(client, self.planner_request(ctx, analysis), spent)
        return self._proposal(analysis, plan, spent)

    def upfront_worst_case(self, ctx: PolicyContext) -> Estimate:
        """What the budget must have room for before the analyst is asked: its call and the
        planner's that follows. A diagnosis without a plan is money spent for nothing; the
        planner's real prompt holds the real analysis, so its own reservation is checked
        again when it is made."""
        planner = self.planner_request(ctx, _ANY_ANALYSIS)
        return self._estimate(self.analyst_request(ctx)) + self._estimate(planner)

    def _estimate(self, request: Request[Any]) -> Estimate:
        """The worst case of ``request``: every attempt at ``llm.max_output_tokens``."""
        limit = self._settings.llm.max_output_tokens
        return self._budget.estimate(
            request.messages, limit, attempts=ATTEMPTS, extra_text=request.schema_text
        )

    def _call(
        self,
        client: LLMClient,
        request: Request[M],
        spent: _Spent,
        *,
        also_held: Estimate | None = None,
    ) -> M:
        """One budgeted call: estimate, reserve (with ``also_held``, the worst case of a
        call that must be affordable after this one), ask, charge (a failed call too)."""
        limit = self._settings.llm.max_output_tokens
        estimate = self._estimate(request)
        if also_held is not None:
            estimate = estimate + also_held
        held = self._budget.reserve(estimate, request.prompt_id)
        try:
            reply: LLMReply[M] = client.structured(
                request.messages, request.schema, max_tokens=limit
            )
        except LLMError as exc:
            spent.usage += self._budget.charge(held, exc.usage)
            spent.note = spent.note or exc.note
            raise
        charged = self._budget.charge(held, reply.usage)
        spent.usage += charged
        spent.note = spent.note or reply.note
        logger.info(
            "%s: %d+%d tokens, $%.6f",
            request.prompt_id,
            charged.tokens_in,
            charged.tokens_out,
            charged.cost_usd,
        )
        return reply.parsed

    def _proposal(self, analysis: AnalystOutput, plan: PlannerOutput, spent: _Spent) -> Proposal:
        actions = [
            Action(knob=a.knob, value=a.value, multiplier=a.multiplier, reason=a.reason)
            for a in plan.actions
        ]
        if plan.rewind != "none":
            actions.insert(0, Action.rewind(plan.rewind, reason="the planner's rewind"))
        reasoning = "\n".join(filter(None, [plan.reasoning, _evidence(analysis)]))
        return Proposal(
            proposer="ai",
            diagnosis=analysis.describe()[:2000],
            kind=analysis.kind,
            actions=actions,
            # a plan is no surer than the diagnosis it rests on
            confidence=min(analysis.confidence, plan.confidence),
            reasoning=reasoning,
            look_again_steps=plan.look_again_steps,
            prompt_version=self.prompt_version,
            **spent.record_fields(),
        )

    def _client_or_raise(self) -> LLMClient:
        if self._client is None:
            key = self._settings.api_key()
            env = self._settings.llm.api_key_env
            if not key:
                raise LLMUnavailable(f"no API key: set {env} (named by llm.api_key_env)")
            self._client = LLMClient(self._settings.llm, key)
        return self._client

    def _unavailable(
        self, reason: str, spent: _Spent, *, provider_failed: bool = False
    ) -> LLMUnavailable:
        if spent.note:  # the fallback's record is where a refused format is said
            reason = f"{reason} ({spent.note})"
        line = " ".join(reason.split())
        logger.warning("LLM policy unavailable: %s", line)
        return LLMUnavailable(line, usage=spent.usage, provider_failed=provider_failed)


_ANY_ANALYSIS = AnalystOutput(kind="other", summary="a problem", confidence=0.5)
"""A stand-in diagnosis to size the planner's call before the analyst has answered."""


def _value_types(knobs: Iterable[KnobSpec]) -> tuple[ValueType, ...]:
    """The JSON types the values of ``knobs`` take: a toggle's, a number, a list of numbers
    for a knob over param groups (which takes one number for all of them too)."""
    found = {"boolean" if k.kind == "bool" else "number" for k in knobs}
    found |= {"array" for k in knobs if k.groups}
    return tuple(t for t in ALL_VALUE_TYPES if t in found)


def _evidence(analysis: AnalystOutput) -> str:
    return "Evidence: " + "; ".join(analysis.evidence) if analysis.evidence else ""
