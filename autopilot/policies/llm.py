"""The LLM policy: an analyst reads the run, a planner proposes knob changes.

Two calls per decision, each estimated, reserved against the budget, made, and charged
(failed attempts included):

1. the analyst reads the summary table, the detector alerts, recent decisions with their
   measured effects, and memory notes, and answers an ``AnalystOutput``;
2. unless the analyst finds the run healthy, the planner reads that diagnosis, the knobs
   with their bounds and current values, and the recent changes, and answers a
   ``PlannerOutput``, which becomes the ``Proposal``.

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
from typing import TypeVar

from pydantic import BaseModel

from autopilot.budget import Budget
from autopilot.config import Settings
from autopilot.errors import BudgetExceeded
from autopilot.llm import (
    ATTEMPTS,
    AnalystOutput,
    LLMClient,
    LLMError,
    LLMUnavailable,
    PlannerOutput,
)
from autopilot.llm.client import Message
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.proposals import Action, Proposal
from kernel import KnobSpec, LedgerRow, format_value
from prompts import Prompt, load_prompt

__all__ = ["LLMPolicy", "LLMUnavailable"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RECENT = 5
"""How many recent decisions and knob changes the prompts show."""
MEMORY_CHARS = 1200
"""Memory notes beyond this are cut (about 300 tokens)."""


@dataclass(kw_only=True)
class _Spent:
    """What this decision's calls have cost so far."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def add(self, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost_usd += cost_usd


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
        spent = _Spent()
        try:
            return self._propose(client, ctx, spent)
        except BudgetExceeded as exc:
            raise self._unavailable(f"budget: {exc.reason}", spent) from exc
        except LLMError as exc:
            raise self._unavailable(exc.message, spent) from exc
        except OSError as exc:  # a spend ledger that cannot be read or written
            raise self._unavailable(f"budget: spend ledger unusable: {exc}", spent) from exc

    def _propose(self, client: LLMClient, ctx: PolicyContext, spent: _Spent) -> Proposal:
        fields = analyst_fields(ctx)
        analysis = self._call(client, self._analyst, fields, AnalystOutput, spent)
        if analysis.kind == "healthy":
            return Proposal(
                proposer="ai",
                diagnosis=analysis.describe()[:2000],
                confidence=analysis.confidence,
                reasoning=_evidence(analysis),
                prompt_version=self._analyst.id,
                **vars(spent),
            )
        fields = planner_fields(ctx, analysis, self._settings.guards.max_actions)
        plan = self._call(client, self._planner, fields, PlannerOutput, spent)
        return self._proposal(analysis, plan, spent)

    def _call(
        self,
        client: LLMClient,
        prompt: Prompt,
        fields: dict[str, object],
        schema: type[M],
        spent: _Spent,
    ) -> M:
        """One budgeted call: estimate, reserve, ask, charge (a failed call too)."""
        messages: list[Message] = prompt.messages(**fields)
        limit = self._settings.llm.max_output_tokens
        schema_text = json.dumps(schema.model_json_schema())
        estimate = self._budget.estimate(messages, limit, attempts=ATTEMPTS, extra_text=schema_text)
        held = self._budget.reserve(estimate, prompt.id)
        try:
            reply = client.structured(messages, schema, max_tokens=limit)
        except LLMError as exc:
            cost = self._budget.charge(
                held, exc.tokens_in, exc.tokens_out, exc.cached_in, exc.usage_reported
            )
            spent.add(exc.tokens_in, exc.tokens_out, cost)
            raise
        cost = self._budget.charge(
            held, reply.tokens_in, reply.tokens_out, reply.cached_in, reply.usage_reported
        )
        spent.add(reply.tokens_in, reply.tokens_out, cost)
        logger.info("%s: %d+%d tokens, $%.6f", prompt.id, reply.tokens_in, reply.tokens_out, cost)
        return reply.parsed

    def _proposal(self, analysis: AnalystOutput, plan: PlannerOutput, spent: _Spent) -> Proposal:
        actions = [
            Action(knob=a.knob, value=a.value, multiplier=a.multiplier, reason=a.reason)
            for a in plan.actions
        ]
        reasoning = "\n".join(filter(None, [plan.reasoning, _evidence(analysis)]))
        return Proposal(
            proposer="ai",
            diagnosis=analysis.describe()[:2000],
            actions=actions,
            # a plan is no surer than the diagnosis it rests on
            confidence=min(analysis.confidence, plan.confidence),
            reasoning=reasoning,
            look_again_steps=plan.look_again_steps,
            prompt_version=self.prompt_version,
            **vars(spent),
        )

    def _client_or_raise(self) -> LLMClient:
        if self._client is None:
            key = self._settings.api_key()
            env = self._settings.llm.api_key_env
            if not key:
                raise LLMUnavailable(f"no API key: set {env} (named by llm.api_key_env)")
            self._client = LLMClient(self._settings.llm, key)
        return self._client

    def _unavailable(self, reason: str, spent: _Spent) -> LLMUnavailable:
        line = " ".join(reason.split())
        logger.warning("LLM policy unavailable: %s", line)
        return LLMUnavailable(line, **vars(spent))


def analyst_fields(ctx: PolicyContext) -> dict[str, object]:
    """The analyst prompt's fields for ``ctx``."""
    memory = ctx.memory_notes.strip()
    if len(memory) > MEMORY_CHARS:
        memory = memory[:MEMORY_CHARS].rsplit(" ", 1)[0] + " [...]"
    return {
        **_header(ctx),
        "summary_table": ctx.summary_table.strip() or "(no metrics yet)",
        "alerts": _lines(
            f"{d.kind} on {d.metric} at step {d.step} ({d.severity}): {d.message}"
            for d in ctx.diagnoses
        ),
        "decisions": _decisions(ctx.past_decisions),
        "memory": memory or "none",
    }


def planner_fields(
    ctx: PolicyContext, analysis: AnalystOutput, max_actions: int
) -> dict[str, object]:
    """The planner prompt's fields for ``ctx`` and the analyst's diagnosis."""
    diagnosis = f"{analysis.describe()} (confidence {analysis.confidence:.2f})"
    if analysis.evidence:
        diagnosis += "\nEvidence: " + "; ".join(analysis.evidence)
    return {
        **_header(ctx),
        "max_actions": max_actions,
        "diagnosis": diagnosis,
        "knobs": _lines(_knob_line(k) for k in ctx.knobs.values()),
        "changes": _lines(_change_line(r) for r in _knob_changes(ctx.recent_changes)),
        "decisions": _decisions(ctx.past_decisions),
    }


def _header(ctx: PolicyContext) -> dict[str, object]:
    direction = "higher is better" if ctx.key_mode == "max" else "lower is better"
    return {"step": ctx.step, "key_metric": ctx.key_metric, "key_direction": direction}


def _lines(items: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in items) or "none"


def _decisions(past: list[PastDecision]) -> str:
    return _lines(
        f"step {p.step}: {p.diagnosis} -> {', '.join(p.actions) or 'no change'}; "
        f"effect: {p.effect or 'not measured yet'}"
        for p in past[-RECENT:]
    )


def _knob_line(knob: KnobSpec) -> str:
    if knob.kind == "bool":
        line = f"{knob.name}: bool, now {format_value(knob.value)}"
    else:
        lo = "-inf" if knob.lo is None else f"{knob.lo:g}"
        hi = "inf" if knob.hi is None else f"{knob.hi:g}"
        groups = f", {knob.groups} groups" if knob.groups else ""
        line = f"{knob.name}: {knob.scale}, [{lo}, {hi}]{groups}, now {format_value(knob.value)}"
    return f"{line} ({knob.description[:80]})" if knob.description else line


def _knob_changes(rows: list[LedgerRow]) -> list[LedgerRow]:
    return [r for r in rows if r.decision == "applied" and r.knob][-RECENT:]


def _change_line(row: LedgerRow) -> str:
    return (
        f"step {row.step}: {row.knob} {format_value(row.before)} -> {format_value(row.after)}"
        f" ({row.source or 'unknown'})"
    )


def _evidence(analysis: AnalystOutput) -> str:
    return "Evidence: " + "; ".join(analysis.evidence) if analysis.evidence else ""
