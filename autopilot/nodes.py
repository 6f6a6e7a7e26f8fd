"""The nodes of the tick graph: plain functions of the ``TickContext`` and the ``TickState``
that return the keys they change (``autopilot.graph`` binds the context).

``observe`` is the only node that reads the training run's files (metrics, ledger,
``kernel.json``, ``freeze.json``); what it read travels in the state. Side effects
(commands, review items, decision records) happen only in ``route`` and ``evaluate``, and
both are idempotent: their ids are derived from the data, and a decision already written is
skipped, so a tick that is re-run after a crash does not act twice. The proposing nodes
(``llm``, ``rules``) live in ``autopilot.propose``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from autopilot import observe as obs
from autopilot.config import AI_MODES, AUTO_MODES, SUGGEST_MODES
from autopilot.context import key_metric_of, past_entry, warn_key_metric
from autopilot.decisions import DecisionRecord, EffectRecord, Route
from autopilot.detectors import diagnose as run_detectors
from autopilot.diagnoses import RECALL_PREFIX, Diagnosis
from autopilot.episodes import Episodes
from autopilot.errors import AutopilotError
from autopilot.guard_context import GuardContext, by_autopilot
from autopilot.guards import Verdict, check, commands_for
from autopilot.llm_calls import LLMCall
from autopilot.notify import notify_decision, notify_rewinds
from autopilot.proposals import Proposal
from autopilot.state import TickContext, TickState, tick_kernel
from autopilot.summary import summary_hash
from autopilot.tokens import Usage
from kernel import (
    KernelError,
    KernelState,
    LedgerRow,
    append_command,
    read_freeze,
    read_kernel_state,
)
from kernel.commands import Source

logger = logging.getLogger(__name__)

_RECENT = 20
"""How many applied changes the prompt is shown."""
_FAR_PAST = -(10**9)
_UNREMEMBERED = 500
"""At most this many applied rows wait for ``evaluate`` to write them to memory."""


# -- observe ----------------------------------------------------------------------------
def observe(ctx: TickContext, state: TickState) -> TickState:
    """Read what was appended since the last tick and fold it into the windows; on a due
    tick, read ``kernel.json`` (and ``freeze.json``) once for every node after this one."""
    offset = state.get("metrics_offset")
    if offset is None:
        offset = obs.start_offset(ctx.run_dir)
    records, offset, inode = obs.read_metrics(ctx.run_dir, offset, state.get("metrics_inode"))
    rows, ledger_offset = obs.read_changes(ctx.run_dir, state.get("ledger_offset", 0))
    update: TickState = {}
    if records and _starts_a_segment(state, records[-1].segment):
        logger.info("run segment %d began: a new run in this directory", records[-1].segment)
        update = _fresh_segment_state()
        state = {**state, **update}
    windows, best = state.get("windows", {}), state.get("best", {})
    span = obs.rewound_span(rows, records)
    if span is not None and list(span) != state.get("rewound"):
        logger.info("the run was rewound at step %d to step %d: so are its windows", *span[::-1])
        update["rewound"] = list(span)
        update["baselines"] = [  # a change before a rewind cannot be measured on its curve
            b for b in state.get("baselines", []) if b["applied_step"] > span[1]
        ]
        windows, best, records = obs.drop_rewound(windows, best, records, span)
    elif (known := state.get("rewound")) and records and records[0].step <= known[1]:
        _, _, records = obs.drop_rewound({}, {}, records, (known[0], known[1]))
    segment, windows, best = obs.fold_segment(
        state.get("segment"), windows, best, records, ctx.settings.detectors.window
    )
    early, peak = obs.fold_run_stats(state.get("early", {}), state.get("peak", {}), records)
    step = records[-1].step if records else state.get("step", 0)
    due = bool(records) and step - state.get("due_step", _FAR_PAST) >= _every(ctx)
    update.update(
        {
            "metrics_offset": offset,
            "metrics_inode": inode,
            "ledger_offset": ledger_offset,
            "segment": segment,
            "windows": windows,
            "best": best,
            "early": early,
            "peak": peak,
            "step": step,
            "outcome": "due" if due else "idle",
        }
    )
    kernel = None
    if due or not state.get("key_metric"):
        kernel = read_kernel_state(ctx.run_dir)
        update.update(_key_metric(ctx, state, kernel, windows, step))
    if due:
        update["due_step"] = step
        update["kernel"] = kernel.model_dump(mode="json") if kernel else None
        frozen_by_kernel = kernel is None or kernel.freeze != "off"
        update["freeze"] = "off" if frozen_by_kernel else _freeze_mode(ctx)
    remembered = [r for r in rows if r.decision == "applied" and (r.knob or r.op == "rewind")]
    if remembered:
        pending = state.get("unremembered", []) + [_row(r) for r in remembered]
        update["unremembered"] = pending[-_UNREMEMBERED:]
    reflexes = [_reflex(r) for r in rows if r.decision == "applied" and r.reflex is not None]
    if reflexes:
        update["reflexes"] = (state.get("reflexes", []) + reflexes)[-_RECENT:]
    applied = [r for r in rows if r.decision == "applied" and r.knob is not None]
    if applied or due:
        update["history"] = _history(ctx, state, applied, step, kernel)
    if applied:
        update["changes"] = (state.get("changes", []) + [_row(r) for r in applied])[-_RECENT:]
        kept = update.get("baselines", state.get("baselines", []))
        latest = update.get("rewound") or state.get("rewound")
        rewound_at = latest[1] if latest else -1
        update["baselines"] = kept + ctx.effects.baselines_for(
            # a change made with a rewind is not measured: its curve is the rewind's too; an
            # autopilot's proposal a person approved unchanged is measured as the autopilot's
            [r for r in applied if by_autopilot(r) and (r.step or 0) > rewound_at],
            windows,
            update.get("key_metric") or state.get("key_metric"),
            update.get("key_mode") or state.get("key_mode") or "min",
        )
    return update


def _starts_a_segment(state: TickState, latest: int) -> bool:
    """Whether records of a later run segment arrived (the training was started again in
    this directory under a watcher that kept its state)."""
    known = state.get("segment")
    return known is not None and latest > known


def _fresh_segment_state() -> TickState:
    """The per-run memory a new segment starts without: its steps count from 0 again, and
    cooldowns, baselines and decisions of the earlier run say nothing about it."""
    return {
        "windows": {},
        "best": {},
        "early": {},
        "peak": {},
        "episodes": {},
        "due_step": _FAR_PAST,
        "key_metric": "",
        "key_unlogged": None,
        "history": [],
        "changes": [],
        "baselines": [],
        "rewound": None,
        "reflexes": [],
        "decided": {},
        "llm_next_step": 0,
        "past": [],
        "unremembered": [],
        "recalled_at": None,
    }


def _freeze_mode(ctx: TickContext) -> str:
    """``freeze.json``'s mode; one that cannot be read counts as the kernel counts it: the
    kernel keeps its own mode (published in ``kernel.json``) and so do the guards."""
    try:
        return read_freeze(ctx.run_dir).mode
    except KernelError as exc:
        logger.warning("%s; the kernel ignores it too, so the guards use the kernel's mode", exc)
        return "off"


def _every(ctx: TickContext) -> int:
    return ctx.settings.cadence.tick_every_steps


def _key_metric(
    ctx: TickContext,
    state: TickState,
    kernel: KernelState | None,
    windows: dict[str, Any],
    step: int,
) -> TickState:
    """The key metric, chosen until the declared one is logged (a fallback is re-chosen
    every tick, so the declared metric takes over once it appears)."""
    if state.get("key_metric") and not state.get("key_unlogged"):
        return {}
    key = key_metric_of(kernel, ctx.settings, windows, step)
    warn_key_metric(ctx.run_dir, kernel, ctx.settings, windows, step)  # once per process
    if key is None:
        return {}
    return {"key_metric": key.name, "key_mode": key.mode, "key_unlogged": key.unlogged}


def _history(
    ctx: TickContext,
    state: TickState,
    applied: list[LedgerRow],
    step: int,
    kernel: KernelState | None,
) -> list[dict[str, Any]]:
    """The applied ``set`` rows the guards need: this segment's, within the longest window
    a guard looks back (cooldowns, the cumulative guard)."""
    guards = ctx.settings.guards
    reach = max(guards.total_window_steps, guards.cooldown_steps, guards.global_cooldown_steps)
    segment = kernel.segment if kernel is not None else None
    kept = state.get("history", []) + [_row(r) for r in applied if r.op == "set"]
    return [
        r
        for r in kept
        if (r.get("step") or 0) > step - reach
        and (segment is None or (r.get("segment") or 0) == segment)
    ]


def after_observe(state: TickState) -> Literal["evaluate", "__end__"]:
    """A due tick with a key metric goes on; any other ends here."""
    return "evaluate" if state.get("outcome") == "due" and state.get("key_metric") else "__end__"


# -- evaluate, diagnose -----------------------------------------------------------------
def evaluate(ctx: TickContext, state: TickState) -> TickState:
    """Measure the effect of earlier changes whose horizon has passed; expire old reviews."""
    if ctx.mode in SUGGEST_MODES:
        ctx.queue.expire_due(state["step"])
        if any(c.get("proposal_id") for c in state.get("changes", [])[-5:]):
            ctx.queue.note_applied()
    baselines, past, measured = ctx.effects.measure_due(state)
    _remember(ctx, state, measured)
    notify_rewinds(ctx.notifier, state.get("unremembered", []))
    return {"baselines": baselines, "past": past, "unremembered": []}


def _remember(ctx: TickContext, state: TickState, measured: list[EffectRecord]) -> None:
    """Write this run, its new interventions and the effects measured now to memory."""
    kernel = tick_kernel(state)
    key = state["key_metric"]
    if kernel is None or not ctx.memory.begin(kernel, key, state["key_mode"]):
        return
    ctx.memory.note(
        state.get("unremembered", []), measured, max_steps=kernel.max_steps, log=ctx.log
    )
    steps, values = state["windows"].get(key, [[], []])
    best = state.get("best", {}).get(key)
    ctx.memory.progress(
        int(steps[-1]) if steps else state["step"],
        values[-1] if values else None,
        best[0] if best else None,
        max_steps=kernel.max_steps,
    )


def diagnose(ctx: TickContext, state: TickState) -> TickState:
    """Run the detectors and fold their reports into episodes (``autopilot.episodes``): an
    episode is decided when it opens (and, in the auto modes, again while no change has
    answered it); a diagnosis decided recently is not decided again yet (but stays
    ``present``, so a late LLM answer about it is still judged)."""
    summary = ctx.summary(state)
    book = Episodes.load(
        state.get("episodes", {}),
        segment=state.get("segment"),
        resolve_after=ctx.settings.cadence.repeat_after_steps,
    )
    found = book.observe(
        run_detectors(summary, state["windows"], ctx.detectors) + _reflex_diagnoses(state),
        step=state["step"],
        applied=state.get("history", []),
        cadences={name: m.cadence for name, m in summary.metrics.items()},
    )
    fresh = [d for d in found if _to_decide(ctx, d, state)]
    update: TickState = {}
    recalled = state.get("recalled_at")
    # a plan the guards cut short goes on once its knob's cooldown from the change is over
    again = ctx.settings.guards.cooldown_steps + _every(ctx)
    if ctx.memory.run is not None and (recalled is None or state["step"] - recalled >= again):
        update["recalled_at"] = state["step"]
        recall = _recall(ctx, state)
        fresh = [recall] if recall is not None else fresh  # the others wait a tick
    return {
        **update,
        "outcome": "diagnosed" if fresh else ("cooldown" if found else "healthy"),
        "proposal": None,
        "fallback_reason": None,
        "urgent": False,
        "llm_spent": None,
        "llm_call": None,
        "verdicts": [],
        "diagnoses": [d.model_dump(mode="json") for d in fresh],
        "present": [d.model_dump(mode="json") for d in found],
        "episodes": book.dump(),
    }


def _recall(ctx: TickContext, state: TickState) -> Diagnosis | None:
    """A ``recall`` diagnosis of the changes earlier runs of this task needed in their first
    half that are due now (``PlannedChange.due_step``) and not yet made."""
    kernel = tick_kernel(state)
    if kernel is None:
        return None
    plan = ctx.memory.start_plan({k.name: k.value for k in kernel.knobs})
    plan = [p for p in plan if p.due_step <= state["step"]]
    if not plan:
        return None
    evidence: dict[str, Any] = {f"{RECALL_PREFIX}{p.knob}": p.factor for p in plan}
    evidence.update({"runs": max(p.runs for p in plan), "weak": any(p.weak for p in plan)})
    return Diagnosis(
        kind="recall",
        metric=state["key_metric"],
        step=state["step"],
        message=("memory: " + "; ".join(p.describe() for p in plan))[:1000],
        evidence=evidence,
    )


def _reflex(row: LedgerRow) -> dict[str, Any]:
    assert row.reflex is not None
    return {
        "step": row.step,
        "snapshot_step": row.snapshot_step,
        "metric": row.reflex.metric,
        "cause": row.reflex.cause,
        "reason": row.reason or "",
    }


def _reflex_diagnoses(state: TickState) -> list[Diagnosis]:
    """A divergence for the kernel's latest reflex rewind, until a decision answers it:
    the reflex saved the run, and the policy decides what comes next (keep lr lower)."""
    reflexes = state.get("reflexes") or []
    if not reflexes:
        return []
    last = reflexes[-1]
    decided = state.get("decided", {}).get("divergence", _FAR_PAST)
    if last["step"] is None or decided >= last["step"]:
        return []
    recent = [r for r in reflexes if r["step"] is not None and last["step"] - r["step"] <= 1000]
    return [
        Diagnosis(
            kind="divergence",
            metric=last["metric"],
            step=last["step"],
            severity="high",
            message=(
                f"the kernel's reflex rewound the run at step {last['step']} to its snapshot "
                f"of step {last['snapshot_step']}: {last['reason']}"
            )[:1000],
            evidence={
                "reflex": True,
                "signal": last["metric"],
                "cause": last["cause"],
                "rewound_to": last["snapshot_step"],
                "reflex_rewinds": len(recent),
            },
        )
    ]


def _to_decide(ctx: TickContext, d: Diagnosis, state: TickState) -> bool:
    """Whether this tick decides ``d``: its episode was never decided, or (auto modes) it
    was and no change has answered it; never within ``repeat_after_steps`` of the last
    decision of its kind."""
    if _recently_decided(ctx, d.kind, state):
        return False
    decided = state.get("decided", {}).get(d.kind)
    if decided is None or d.onset_step is None or decided < d.onset_step:
        return True
    return ctx.mode in AUTO_MODES


def _recently_decided(ctx: TickContext, kind: str, state: TickState) -> bool:
    decided = state.get("decided", {})
    repeat = ctx.settings.cadence.repeat_after_steps
    since = state["step"] - decided.get(kind, _FAR_PAST)
    # a loss recovering from a divergence swings hard: that is its aftermath, not a new
    # instability, so oscillation waits as long after a divergence as after itself
    since_divergence = state["step"] - decided.get("divergence", _FAR_PAST)
    return since < repeat or (kind == "oscillation" and since_divergence < repeat)


def after_diagnose(
    ctx: TickContext, state: TickState
) -> Literal["llm", "rules", "route", "__end__"]:
    """Healthy ends the tick; mode ``off`` only records; the AI modes go to the LLM node
    (which never waits: see ``autopilot.propose``), also with nothing diagnosed when the
    LLM call in flight has an outcome to take or was lost."""
    recall = any(d["kind"] == "recall" for d in state.get("diagnoses", []))
    if recall:  # memory's start plan is the rules' to propose, in every mode
        return "route" if ctx.mode == "off" else "rules"
    if ctx.mode in AI_MODES:
        ask = state.get("llm_ask")
        news = ask is not None and (
            ctx.llm_calls.settled(ask["id"]) or not ctx.llm_calls.holds(ask["id"])
        )
        return "llm" if state.get("diagnoses") or news else "__end__"
    if not state.get("diagnoses"):
        return "__end__"
    return "route" if ctx.mode == "off" else "rules"


# -- guard and route --------------------------------------------------------------------
def guard(ctx: TickContext, state: TickState) -> TickState:
    """Check every action against bounds, caps, cooldowns, freeze and the noop bias, with
    what ``observe`` read this tick."""
    proposal = Proposal.model_validate(state["proposal"])
    verdicts = check(proposal, guard_context(ctx, state), ctx.settings)
    return {"verdicts": [v.model_dump(mode="json") for v in verdicts]}


def guard_context(ctx: TickContext, state: TickState) -> GuardContext:
    """The guards' view of the run, built from the tick state (no file is read again).

    Raises:
        AutopilotError: when no kernel had started when the tick observed the run.
    """
    kernel = tick_kernel(state)
    if kernel is None:
        raise AutopilotError(
            f"no kernel has started in {ctx.run_dir} yet, so its knobs are unknown; "
            "start the training first"
        )
    rows = [LedgerRow.model_validate(r) for r in state.get("history", [])]
    # kernel.json's step lags by up to a heartbeat; the metrics are the fresher clock
    return GuardContext.build(
        kernel,
        rows,
        state.get("freeze") or "off",
        improved=ctx.log.improved_commands(),
        worse=ctx.log.worse_commands(),
        diagnosed=[d["kind"] for d in state.get("diagnoses", [])],
        step=state["step"],
        last_rewind_step=rewound[1] if (rewound := state.get("rewound")) else None,
        logged_peak={
            name: float(peak[0])
            for name, peak in state.get("peak", {}).items()
            if kernel.knob(name) is not None and peak
        },
    )


def route(ctx: TickContext, state: TickState) -> TickState:
    """Send allowed changes to the kernel (auto) or the review queue (suggest); record."""
    diagnoses = [Diagnosis.model_validate(d) for d in state["diagnoses"]]
    digest = summary_hash(ctx.summary(state))
    decision_id = f"d{state['step']}-{digest[:6]}"
    update: TickState = {
        "decided": _decided(state, diagnoses),
        "last_decision_id": decision_id,
    }
    if ctx.log.has(decision_id):
        return update  # this tick already ran to the end before a restart
    raw = state.get("proposal")
    proposal = Proposal.model_validate(raw) if raw else None
    verdicts = [Verdict.model_validate(v) for v in state.get("verdicts", [])]
    where, command_ids = _dispatch(ctx, decision_id, state, diagnoses, proposal, verdicts)
    record = DecisionRecord(
        id=decision_id,
        step=state["step"],
        time=time.time(),
        mode=ctx.mode,
        summary_hash=digest,
        diagnoses=diagnoses,
        proposer=proposal.proposer if proposal else None,
        prompt_version=proposal.prompt_version if proposal else None,
        fallback_reason=proposal.fallback_reason if proposal else None,
        urgent=proposal.urgent if proposal else False,
        usage=proposal.usage if proposal else Usage(),
        note=proposal.provider_note if proposal else None,
        llm_call=LLMCall.model_validate(state["llm_call"]) if state.get("llm_call") else None,
        proposal=proposal,
        verdicts=verdicts,
        route=where,
        command_ids=command_ids,
        proposal_id=decision_id if where == "review" else None,
    )
    ctx.log.append(record)
    _log_decision(record)
    notify_decision(ctx.notifier, record, ctx.settings)
    update["past"] = (state.get("past", []) + [past_entry(record)])[-5:]
    return update


def _dispatch(
    ctx: TickContext,
    decision_id: str,
    state: TickState,
    diagnoses: list[Diagnosis],
    proposal: Proposal | None,
    verdicts: list[Verdict],
) -> tuple[Route, list[str]]:
    if proposal is None or not any(v.passed for v in verdicts) or ctx.mode == "off":
        return "none", []
    if ctx.mode in SUGGEST_MODES:
        item = ctx.queue.new_item(
            step=state["step"],
            proposal=proposal,
            verdicts=verdicts,
            diagnoses=diagnoses,
            item_id=decision_id,
        )
        ctx.queue.add(item)
        return "review", []
    source: Source = proposal.proposer if proposal.proposer in ("ai", "tune") else "rules"
    kind = diagnoses[0].kind if diagnoses else None  # the tuner also tunes a healthy run
    kernel = tick_kernel(state)
    commands = commands_for(
        verdicts,
        source=source,
        proposal_id=decision_id,
        reason_prefix=kind or proposal.proposer,
        decision_id=decision_id,
        for_diagnosis=kind,
        segment=kernel.segment if kernel is not None else None,
    )
    for command in commands:
        append_command(ctx.run_dir, command)
    return "kernel", [c.id for c in commands]


def _decided(state: TickState, diagnoses: list[Diagnosis]) -> dict[str, int]:
    decided = dict(state.get("decided", {}))
    for d in diagnoses:
        decided[d.kind] = state["step"]
    return decided


def _row(row: LedgerRow) -> dict[str, Any]:
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


__all__ = [
    "after_diagnose",
    "after_observe",
    "diagnose",
    "evaluate",
    "guard",
    "guard_context",
    "observe",
    "route",
]
