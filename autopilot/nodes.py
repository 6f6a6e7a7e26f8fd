"""The nodes of the tick graph. Each takes the ``TickState`` and returns the keys it changes.

``Nodes`` holds what the nodes share and must not live in the checkpointed state: the run
directory, the settings, the mode, the policies and the stores. Side effects (commands,
review items, decision records) happen only in ``route`` and ``evaluate``, and both are
idempotent: their ids are derived from the data, and a decision already written is skipped,
so a tick that is re-run after a crash does not act twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Literal, cast

from autopilot import observe as obs
from autopilot.config import AI_MODES, SUGGEST_MODES, Mode, Settings
from autopilot.context import build_context, key_metric_of, past_entry
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.detectors import diagnose
from autopilot.diagnoses import Diagnosis
from autopilot.effects import Effects
from autopilot.guards import GuardContext, check, commands_for
from autopilot.policies.rules import AUTOPILOT_SOURCES, RulePolicy
from autopilot.proposals import Proposal
from autopilot.review import ReviewQueue
from autopilot.summary import RunSummary, summarize, summary_hash
from kernel import append_command
from kernel.commands import Source
from memory import past_run_notes

logger = logging.getLogger(__name__)

_RECENT = 20
Route = Literal["kernel", "review", "none"]


class Nodes:
    """The tick's nodes, bound to one run directory, settings and mode."""

    def __init__(
        self, run_dir: Path, settings: Settings, mode: str, *, llm_policy: Any = None
    ) -> None:
        self.run_dir, self.settings, self.mode = run_dir, settings, mode
        self.log = DecisionLog(run_dir)
        self.queue = ReviewQueue(run_dir, settings)
        self.rule_policy = RulePolicy(rollback_window_steps=settings.evaluate.horizon_steps)
        self.effects = Effects(run_dir, settings, mode, self.log)
        self._llm_policy = llm_policy
        self.memory_notes = past_run_notes(run_dir)
        self._summary: tuple[tuple[int, int], RunSummary] | None = None

    # -- observe ------------------------------------------------------------------------
    def observe(self, state: dict[str, Any]) -> dict[str, Any]:
        """Read what was appended since the last tick and fold it into the windows."""
        offset = state.get("metrics_offset")
        if offset is None:
            offset = obs.start_offset(self.run_dir)
        records, offset = obs.read_metrics(self.run_dir, offset)
        rows, ledger_offset = obs.read_changes(self.run_dir, state.get("ledger_offset", 0))
        windows, best = obs.fold_records(
            state.get("windows", {}), state.get("best", {}), records, self.settings.detectors.window
        )
        step = records[-1].step if records else state.get("step", 0)
        update: dict[str, Any] = {
            "metrics_offset": offset,
            "ledger_offset": ledger_offset,
            "windows": windows,
            "best": best,
            "step": step,
        }
        if not state.get("key_metric"):
            key = key_metric_of(self.run_dir, self.settings, windows)
            if key is not None:
                update["key_metric"], update["key_mode"] = key
        changes = [r for r in rows if r.decision == "applied" and r.knob is not None]
        if changes:
            update["changes"] = (state.get("changes", []) + [_row(r) for r in changes])[-_RECENT:]
            update["baselines"] = state.get("baselines", []) + self.effects.baselines_for(
                [r for r in changes if r.source in AUTOPILOT_SOURCES],
                windows,
                update.get("key_metric") or state.get("key_metric"),
                update.get("key_mode") or state.get("key_mode") or "min",
            )
        due = records and step - state.get("due_step", -(10**9)) >= self._every
        update["outcome"] = "due" if due else "idle"
        if due:
            update["due_step"] = step
        return update

    @property
    def _every(self) -> int:
        return self.settings.cadence.tick_every_steps

    def after_observe(self, state: dict[str, Any]) -> str:
        return "go" if state.get("outcome") == "due" and state.get("key_metric") else "end"

    # -- summarize, evaluate, diagnose --------------------------------------------------
    def summarize(self, state: dict[str, Any]) -> dict[str, Any]:
        """Compress the windows into per-metric trends (what the LLM reads)."""
        self.summary_of(state)
        return {}

    def summary_of(self, state: dict[str, Any]) -> RunSummary:
        """The summary of the state's windows. It is derived data, so it is kept here rather
        than in the checkpointed state, and recomputed after a restart."""
        key = (state["step"], state["metrics_offset"])
        if self._summary is None or self._summary[0] != key:
            summary = summarize(
                state["windows"],
                state["best"],
                step=state["step"],
                key_metric=state["key_metric"],
                key_mode=state["key_mode"],
                min_points=self.settings.detectors.min_points,
            )
            self._summary = (key, summary)
        return self._summary[1]

    def evaluate(self, state: dict[str, Any]) -> dict[str, Any]:
        """Measure the effect of earlier changes whose horizon has passed; expire old reviews."""
        if self.mode in SUGGEST_MODES:
            self.queue.expire_due(state["step"])
            if any(c.get("proposal_id") for c in state.get("changes", [])[-5:]):
                self.queue.note_applied()
        baselines, past = self.effects.measure_due(state)
        return {"baselines": baselines, "past": past}

    def diagnose(self, state: dict[str, Any]) -> dict[str, Any]:
        """Run the detectors; a diagnosis decided recently is not decided again yet."""
        found = diagnose(self.summary_of(state), state["windows"], self.settings.detectors)
        fresh = [d for d in found if not self._recently_decided(d.kind, state)]
        outcome = "diagnosed" if fresh else ("cooldown" if found else "healthy")
        if fresh and self._waits_for_llm(fresh[0], state):
            fresh, outcome = [], "waiting for the LLM"
        return {
            "diagnoses": [d.model_dump(mode="json") for d in fresh],
            "outcome": outcome,
            "proposal": None,
            "fallback_reason": None,
            "llm_spent": {},
            "verdicts": [],
        }

    def _recently_decided(self, kind: str, state: dict[str, Any]) -> bool:
        decided = state.get("decided", {})
        repeat = self.settings.cadence.repeat_after_steps
        since = state["step"] - decided.get(kind, -(10**9))
        # a loss recovering from a divergence swings hard: that is its aftermath, not a new
        # instability, so oscillation waits as long after a divergence as after itself
        since_divergence = state["step"] - decided.get("divergence", -(10**9))
        return since < repeat or (kind == "oscillation" and since_divergence < repeat)

    def _waits_for_llm(self, first: Diagnosis, state: dict[str, Any]) -> bool:
        """In the AI modes a diagnosis waits for the LLM's cadence, unless it cannot wait:
        the rules answer a divergence at once (and any diagnosis while no key or no budget
        lets the LLM be asked at all)."""
        if self.mode not in AI_MODES or first.kind == "divergence":
            return False
        return state["step"] < state.get("llm_next_step", 0)

    def after_diagnose(self, state: dict[str, Any]) -> str:
        if not state.get("diagnoses"):
            return "end"
        if self.mode == "off":
            return "record"
        if self.mode in AI_MODES:
            return "llm"
        return "rules"

    # -- propose ------------------------------------------------------------------------
    def llm(self, state: dict[str, Any]) -> dict[str, Any]:
        """Ask the LLM agents (analyst, planner); on any failure, say why and fall back."""
        step = state["step"]
        next_step = state.get("llm_next_step", 0)
        if step < next_step:
            return {"fallback_reason": f"cadence: the next LLM call is allowed at step {next_step}"}
        gap = self.settings.budget.min_steps_between_calls
        from autopilot.policies.llm import LLMUnavailable

        try:
            proposal = self._llm().propose(build_context(self, state))
        except LLMUnavailable as exc:
            logger.warning("LLM not used at step %d: %s; using the rules", step, exc.reason)
            spent = {
                "tokens_in": exc.tokens_in,
                "tokens_out": exc.tokens_out,
                "cost_usd": exc.cost_usd,
            }
            update: dict[str, Any] = {"fallback_reason": exc.reason, "llm_spent": spent}
            if exc.provider_failed:
                update["llm_next_step"] = step + gap
            return update
        look = max(gap, proposal.look_again_steps or 0)
        return {"proposal": proposal.model_dump(mode="json"), "llm_next_step": step + look}

    def _llm(self) -> Any:
        if self._llm_policy is None:
            from autopilot.policies.llm import LLMPolicy

            self._llm_policy = LLMPolicy(self.settings, self.run_dir)
        return self._llm_policy

    def warm_up(self) -> None:
        """Load the LLM policy and the ``openai`` client now, not in the first urgent tick
        (importing them takes about half a second)."""
        self._llm()
        import openai  # noqa: F401

    def after_llm(self, state: dict[str, Any]) -> str:
        return "guard" if state.get("proposal") else "rules"

    def rules(self, state: dict[str, Any]) -> dict[str, Any]:
        """The rule policy's proposal (also the fallback of the AI modes)."""
        proposal = self.rule_policy.propose(build_context(self, state, table=False))
        spent = state.get("llm_spent") or {}
        proposal = proposal.model_copy(
            update={
                "fallback_reason": state.get("fallback_reason"),
                "tokens_in": int(spent.get("tokens_in", 0)),
                "tokens_out": int(spent.get("tokens_out", 0)),
                "cost_usd": float(spent.get("cost_usd", 0.0)),
            }
        )
        return {"proposal": proposal.model_dump(mode="json")}

    # -- guard and route ----------------------------------------------------------------
    def guard(self, state: dict[str, Any]) -> dict[str, Any]:
        """Check every action against bounds, caps, cooldowns, freeze and the noop bias."""
        proposal = Proposal.model_validate(state["proposal"])
        ctx = GuardContext.from_run(self.run_dir)
        # kernel.json's step lags by up to a heartbeat; the metrics are the fresher clock
        ctx = dataclasses.replace(ctx, step=max(ctx.step, state["step"]))
        verdicts = check(proposal, ctx, self.settings)
        return {"verdicts": [v.model_dump(mode="json") for v in verdicts]}

    def route(self, state: dict[str, Any]) -> dict[str, Any]:
        """Send allowed changes to the kernel (auto) or the review queue (suggest); record."""
        diagnoses = [Diagnosis.model_validate(d) for d in state["diagnoses"]]
        digest = summary_hash(self.summary_of(state))
        decision_id = f"d{state['step']}-{digest[:6]}"
        update = {"decided": self._decided(state, diagnoses), "last_decision_id": decision_id}
        if self.log.has(decision_id):
            return update  # this tick already ran to the end before a restart
        proposal = Proposal.model_validate(state["proposal"]) if state.get("proposal") else None
        verdicts = state.get("verdicts", [])
        route, command_ids = self._dispatch(decision_id, state, diagnoses, proposal)
        record = DecisionRecord(
            id=decision_id,
            step=state["step"],
            time=time.time(),
            mode=cast(Mode, self.mode),
            summary_hash=digest,
            diagnoses=diagnoses,
            proposer=proposal.proposer if proposal else None,
            prompt_version=proposal.prompt_version if proposal else None,
            fallback_reason=proposal.fallback_reason if proposal else None,
            tokens_in=proposal.tokens_in if proposal else 0,
            tokens_out=proposal.tokens_out if proposal else 0,
            cost_usd=proposal.cost_usd if proposal else 0.0,
            proposal=proposal,
            verdicts=verdicts,
            route=cast(Route, route),
            command_ids=command_ids,
            proposal_id=decision_id if route == "review" else None,
        )
        self.log.append(record)
        _log_decision(record)
        update["past"] = (state.get("past", []) + [past_entry(record)])[-5:]
        return update

    def _dispatch(
        self,
        decision_id: str,
        state: dict[str, Any],
        diagnoses: list[Diagnosis],
        proposal: Proposal | None,
    ) -> tuple[str, list[str]]:
        from autopilot.guards import Verdict

        verdicts = [Verdict.model_validate(v) for v in state.get("verdicts", [])]
        usable = [v for v in verdicts if v.status != "rejected"]
        if proposal is None or not usable or self.mode == "off":
            return "none", []
        if self.mode in SUGGEST_MODES:
            item = self.queue.new_item(
                step=state["step"],
                proposal=proposal,
                verdicts=verdicts,
                diagnoses=diagnoses,
                item_id=decision_id,
            )
            self.queue.add(item)
            return "review", []
        source: Source = "ai" if proposal.proposer == "ai" else "rules"
        commands = commands_for(
            verdicts, source=source, proposal_id=decision_id, reason_prefix=diagnoses[0].kind
        )
        for command in commands:
            append_command(self.run_dir, command)
        return "kernel", [c.id for c in commands]

    def _decided(self, state: dict[str, Any], diagnoses: list[Diagnosis]) -> dict[str, int]:
        decided = dict(state.get("decided", {}))
        for d in diagnoses:
            decided[d.kind] = state["step"]
        return decided


def _row(row: Any) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude_none=True)


def _log_decision(record: DecisionRecord) -> None:
    kinds = ", ".join(d.kind for d in record.diagnoses)
    logger.info(
        "step %d: %s -> %s via %s (%s)",
        record.step,
        kinds,
        record.route,
        record.proposer,
        record.fallback_reason or "no fallback",
    )


__all__ = ["Nodes"]
