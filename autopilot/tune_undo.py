"""Undoing an online tuner's trial that did not pay (``autopilot.tune_node``).

A ``worse`` trial is rewound to the segment's start snapshot when that snapshot's key metric
beats what the segment ended at by ``evaluate.worse_rel``: its weights are worth the steps a
rewind gives up, and the rewind restores the optimizer, the scheduler and the knobs too. The
start snapshot is the newest before the trial's change and not before the change ahead of
it (an undo of the trial before: an older snapshot would bring back the value it undid).
Otherwise, and for a ``neutral`` trial, each knob is set back to its value from before (the
ledger row's), keeping the weights: a change measured worse than the projection may still
have left them better than they were (a recovering run is judged against its best before),
and a neutral one bought nothing for its move away from the start the run was given.

The undo goes through the guards like any proposal (a rollback a diagnosis forbids stays
undone) and is recorded as a decision of the tuner (``tune-t<trial>-undo``), once.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from autopilot import nodes
from autopilot.decisions import DecisionRecord, EffectRecord
from autopilot.guards import Verdict, check, commands_for
from autopilot.proposals import Action, Proposal
from autopilot.state import TickContext, TickState, tick_kernel
from kernel import KernelState, SnapshotInfo, append_command

logger = logging.getLogger(__name__)


def undo(
    ctx: TickContext,
    state: TickState,
    trial: int,
    effects: list[EffectRecord],
    *,
    verdict: str,
) -> tuple[str, str] | None:
    """Undo trial ``trial`` through the guards, recorded as a decision of the tuner: how
    (``rewind`` or ``value``) and the first command's id; ``None`` when nothing went.

    A ``worse`` trial is rewound to the newest snapshot before its change when that
    snapshot's key metric beats what the segment ended at: its weights are worth restoring,
    and the rewind restores the knobs too. Otherwise, and for a ``neutral`` trial, each knob
    is set back to its value from before (the ledger row's), keeping the weights: a change
    measured worse than the projection may still have left them better than they were (a
    recovering run is judged against its best before), and a neutral one bought nothing for
    its move away from the start the run was given."""
    kernel = tick_kernel(state)
    assert kernel is not None
    actions = _undo_actions(ctx, kernel, state, trial, effects, rewind=verdict == "worse")
    if not actions:
        logger.warning("tuner trial %d cannot be undone: no snapshot and no value before", trial)
        return None
    how = "rewind" if actions[0].op == "rewind" else "value"
    decision_id = f"tune-t{trial}-undo"
    measured = sum(e.change_rel for e in effects) / len(effects)
    proposal = Proposal(
        proposer="tune",
        trial=trial,
        diagnosis=f"tuner trial {trial}: {verdict}, {measured:+.0%} vs projection",
        actions=actions,
        reasoning=f"undo trial {trial}: " + ", ".join(a.describe() for a in actions),
    )
    verdicts = check(proposal, nodes.guard_context(ctx, state), ctx.settings)
    commands = commands_for(
        verdicts,
        source="tune",
        proposal_id=decision_id,
        reason_prefix=f"undo tuner trial {trial}",
        decision_id=decision_id,
        segment=kernel.segment,
    )
    if not ctx.log.has(decision_id):
        for command in commands:
            append_command(ctx.run_dir, command)
        ctx.log.append(_undo_record(ctx, state, decision_id, proposal, verdicts, commands))
    if not commands:
        why = "; ".join(f"{v.reason} ({v.rule})" for v in verdicts)
        logger.warning("tuner trial %d: its undo was rejected: %s", trial, why)
        return None
    logger.info("tuner trial %d undone by %s: %s", trial, how, proposal.reasoning)
    return how, commands[0].id


def _undo_actions(
    ctx: TickContext,
    kernel: KernelState,
    state: TickState,
    trial: int,
    effects: list[EffectRecord],
    *,
    rewind: bool,
) -> list[Action]:
    snapshot = _start_snapshot(kernel, state, min(e.applied_step for e in effects))
    margin = ctx.settings.evaluate.worse_rel
    level = None if snapshot is None else _metric_at(state, snapshot)
    if rewind and snapshot is not None and _beats(level, effects[0].observed, state, margin):
        return [Action.rewind("step", to_step=snapshot.step, reason=f"undo tuner trial {trial}")]
    actions = []
    for effect in effects:
        rows = [r for r in state.get("changes", []) if r.get("command_id") == effect.command_id]
        if rows and rows[-1].get("before") is not None:
            actions.append(
                Action(
                    knob=effect.knob,
                    value=rows[-1]["before"],
                    rolls_back=effect.command_id,
                    reason=f"undo tuner trial {trial}",
                )
            )
    return actions


def _start_snapshot(kernel: KernelState, state: TickState, applied: int) -> SnapshotInfo | None:
    """The segment's start snapshot: the newest before the change at ``applied``, and not
    before the last change applied ahead of it (an undo of the trial before: a snapshot
    from before that would bring back the value it undid)."""
    earlier = [
        int(r["step"]) for r in state.get("changes", []) if int(r.get("step") or 0) < applied
    ]
    floor = max(earlier, default=-1)
    kept = [s for s in kernel.snapshots if floor <= s.step < applied]
    return max(kept, key=lambda s: s.step) if kept else None


def _metric_at(state: TickState, snapshot: SnapshotInfo) -> float | None:
    """The key metric of ``snapshot``: its own, else the latest logged at or before its
    step (an evaluation every N steps rarely falls on the snapshot's step)."""
    if snapshot.metric is not None:
        return snapshot.metric
    steps, values = state["windows"].get(state["key_metric"], [[], []])
    before = [v for s, v in zip(steps, values, strict=True) if s <= snapshot.step]
    return float(before[-1]) if before else None


def _beats(metric: float | None, observed: float | None, state: TickState, margin: float) -> bool:
    """Whether a snapshot's key metric is better than the ``observed`` one by more than
    ``margin`` of it: its weights are clearly worth the steps a rewind gives up."""
    if metric is None or not math.isfinite(metric):
        return False
    if observed is None:
        return True  # the segment ended non-finite
    gain = observed - metric if state.get("key_mode", "min") == "min" else metric - observed
    return gain > margin * abs(observed)


def _undo_record(
    ctx: TickContext,
    state: TickState,
    decision_id: str,
    proposal: Proposal,
    verdicts: list[Verdict],
    commands: list[Any],
) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        step=state["step"],
        time=time.time(),
        mode=ctx.mode,
        diagnoses=[],
        proposer="tune",
        proposal=proposal,
        verdicts=verdicts,
        route="kernel" if commands else "none",
        command_ids=[c.id for c in commands],
    )


__all__ = ["undo"]
