"""The rule policy: deterministic proposals, used in ``suggest``/``auto`` and whenever the LLM
cannot be used.

| diagnosis   | proposal                                                              |
|-------------|-----------------------------------------------------------------------|
| divergence  | a damaged network (its progress lost, ``evidence.damaged``): rewind  |
|             | to the best snapshot (or the newest before the best step), then       |
|             | ``lr x0.5``; never more lr cuts on a dead network; else               |
|             | after the kernel's reflex rewound a spike: ``lr x0.5`` from the        |
|             | restored lr (and clipping on for a gradient-norm trip); else         |
|             | roll back the last autopilot change if it came shortly before; else    |
|             | ``lr x0.1`` (and turn gradient clipping on if gradients exploded)     |
|             | (a change made for divergence, or a rollback, is never rolled back,   |
|             | nor one whose undo would move a knob the way the diagnoses forbid:    |
|             | after an oscillation cut 0.3 -> 0.15, restoring 0.3 restores the bug) |
| oscillation | ``lr x0.5``                                                           |
| overfitting | ``weight_decay x2`` when weight decay is on (``weight_decay=1e-2``   |
|             | when it acts as none, < 1e-4), else ``lr x0.5``                       |
| imbalance   | ``loss.<term> x0.2`` for the term that dominates ``train/loss``       |
| recall      | memory's start plan: each ``x:<knob>`` factor of its evidence         |
|             | (what earlier runs of this task needed early on, ``autopilot.remember``) |
| plateau     | ``lr x0.5``; ``lr x2`` when the lr collapsed (evidence              |
|             | ``lr_collapsed``: below 10 % of its peak after a drop no schedule   |
|             | makes), since cutting a collapsed lr further only deepens the stall,  |
|             | and when learning is slow with a tiny update ratio (``slow``)        |

What was measured steers them: a change whose last move of the same knob the same way was
measured ``neutral`` or ``worse`` (its effect record) is not repeated, and a plateau tries
the other direction instead (not a divergence, whose cut always stands). This replaces
"halve lr every ~110 steps" on a run the cuts do not help.

Memory steers them too (``PolicyContext.lessons``, earlier runs of this task and similar
ones): a move measured mostly neutral or worse there for the same diagnosis is skipped (a
plateau tries the other way if that one worked), and a move that worked takes the factor
that worked. A lesson of one observation only says so. Memory never overrides a guard.

Multipliers are resolved later by the guards against the knob's true current value from
``kernel.json``; this policy only decides the direction and the factor. What a change was
for is read from the ledger's typed fields (``intent``, ``for_diagnosis``), never its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopilot.detectors._base import is_grad_norm
from autopilot.diagnoses import RECALL_PREFIX, Diagnosis
from autopilot.directions import against
from autopilot.guard_context import by_autopilot
from autopilot.guards import EFFECTIVELY_OFF
from autopilot.policies._base import PolicyContext
from autopilot.proposals import Action, Proposal
from kernel import LedgerRow, format_value
from kernel.knobs import knob_family
from memory.lessons import Lesson

_CONFIDENCE = {
    "divergence": 0.9,
    "oscillation": 0.7,
    "overfitting": 0.7,
    "imbalance": 0.7,
    "plateau": 0.8,
    "recall": 0.8,
}
_WEAK_RECALL = 0.6
"""The confidence of a start plan resting on one earlier run (above the noop threshold: a
weak lesson is still tried, and says so)."""


@dataclass(frozen=True, kw_only=True)
class RulePolicy:
    """Fixed responses to each diagnosis.

    Args:
        rollback_window_steps: a divergence this soon after an autopilot change rolls it back.
        grad_clip_on: the clipping norm set when gradients explode and clipping is off.
    """

    name: str = "rules"
    rollback_window_steps: int = 100
    grad_clip_on: float = 1.0
    undo_memory_steps: int = 1000
    """A knob whose change was rolled back this recently is left alone (except to stop a
    divergence): the same rule would only make the same mistake again."""
    down_weight: float = 0.2
    """The factor on a loss term's weight when that term dominates the total (imbalance)."""
    weight_decay_on: float = 1e-2
    """The weight decay set against overfitting when the run's acts as none (< 1e-4)."""
    damaged_lr: float = 0.5
    """The lr factor that goes with the rewind of a damaged network (from the restored lr)."""
    after_reflex_lr: float = 0.5
    """The lr factor after the kernel's reflex rewound a spike (from the restored lr)."""
    raise_collapsed_lr: float = 2.0
    """The factor for a plateau whose lr collapsed, or a run learning too slowly with a tiny
    update ratio (the guards' ``max_up`` caps it)."""

    def propose(self, ctx: PolicyContext) -> Proposal:
        """Actions for the most urgent diagnosis in ``ctx`` (diagnoses come sorted by urgency)."""
        if not ctx.diagnoses:
            return Proposal(proposer="rules", diagnosis="healthy", confidence=1.0)
        first = ctx.diagnoses[0]
        proposed, notes = self._actions(first, ctx)
        proposed, steered = _steered(first, proposed, ctx)
        proposed, skipped = self._remembered(first, proposed, ctx)
        actions, prior_notes = _priors(first, proposed, ctx)
        skipped = steered + skipped + prior_notes
        if actions:
            reasoning = f"rule for {first.kind}: " + ", ".join(a.describe() for a in actions)
        elif skipped:
            reasoning = f"rule for {first.kind}: no change, from what was measured"
        else:
            reasoning = f"no rule applies to {first.kind} with this run's knobs"
        return Proposal(
            proposer="rules",
            diagnosis=first.message,
            kind=first.kind,
            actions=actions,
            confidence=_WEAK_RECALL if first.evidence.get("weak") else _CONFIDENCE[first.kind],
            reasoning="; ".join([reasoning, *notes, *skipped]),
        )

    def _remembered(
        self, diagnosis: Diagnosis, actions: list[Action], ctx: PolicyContext
    ) -> tuple[list[Action], list[str]]:
        """``actions`` without those that would move a knob again the way a change rolled
        back lately had moved it (the other direction, the rollback's own, is tried)."""
        if diagnosis.kind == "divergence":
            return actions, []
        undone: dict[str, tuple[int, bool | None]] = {}
        for r in ctx.recent_changes:
            recent = r.step is not None and ctx.step - r.step <= self.undo_memory_steps
            if r.knob and recent and r.intent == "rollback":
                undone[knob_family(r.knob)] = (int(r.step or 0), _went_up(r))
        kept, skipped = [], []
        for a in actions:
            entry = undone.get(knob_family(a.knob))
            up = None if a.multiplier is None else a.multiplier > 1.0
            if entry is None or (up is not None and up == entry[1]):
                kept.append(a)  # untouched lately, or the way the rollback itself went
                continue
            skipped.append(
                f"{a.describe()} skipped: a change to {a.knob} was rolled back at step "
                f"{entry[0]} because it made things worse"
            )
        return kept, skipped

    def _actions(self, diagnosis: Diagnosis, ctx: PolicyContext) -> tuple[list[Action], list[str]]:
        """The actions for ``diagnosis`` and notes on what was considered and not done."""
        if diagnosis.kind == "divergence":
            return self._divergence(diagnosis, ctx)
        if diagnosis.kind == "recall":
            return _recalled(diagnosis, ctx), []
        if diagnosis.kind == "imbalance":
            knob = str(diagnosis.evidence.get("knob"))
            if knob not in ctx.knobs:
                return [], [f"the run has no knob {knob} to down-weight"]
            return [Action(knob=knob, multiplier=self.down_weight)], []
        if diagnosis.kind == "overfitting":
            wd = ctx.knobs.get("weight_decay")
            if wd is not None and _positive(wd.value):
                if _below(wd.value, EFFECTIVELY_OFF["weight_decay"][0]):
                    note = f"weight_decay {format_value(wd.value)} acts as none: turned on"
                    on = Action(knob="weight_decay", value=self.weight_decay_on)
                    return [on], [note]
                return [Action(knob="weight_decay", multiplier=2.0)], []
        collapsed = diagnosis.evidence.get("lr_collapsed")
        if diagnosis.kind == "plateau" and isinstance(collapsed, float):
            before = diagnosis.evidence.get("lr_before")
            if isinstance(before, float) and "lr" in ctx.knobs:
                note = (
                    f"lr is {collapsed:.2g} of its peak after a sudden drop: restored to "
                    f"{before:.3g}, the value the run trained at before it"
                )
                restore = Action(knob="lr", value=before, restores=True, reason="collapsed lr")
                return [restore], [note]
            note = f"lr is {collapsed:.2g} of its peak: a collapsed lr is raised, not cut"
            return _lr(self.raise_collapsed_lr, ctx), [note]
        ratio = diagnosis.evidence.get("update_ratio")
        if diagnosis.kind == "plateau" and diagnosis.evidence.get("slow"):
            note = f"update ratio {ratio:.1e}: the lr barely moves the weights, so it is raised"
            return _lr(self.raise_collapsed_lr, ctx), [note]
        return _lr(0.5, ctx), []

    def _divergence(
        self, diagnosis: Diagnosis, ctx: PolicyContext
    ) -> tuple[list[Action], list[str]]:
        if diagnosis.evidence.get("reflex"):
            return self._after_reflex(diagnosis, ctx)
        if diagnosis.evidence.get("damaged"):
            return self._damaged(diagnosis, ctx)
        last = _last_autopilot_change(ctx.recent_changes)
        notes: list[str] = []
        if (
            last is not None
            and last.step is not None
            and last.before is not None
            and diagnosis.step - last.step <= self.rollback_window_steps
            and last.knob in ctx.knobs
            and last.intent != "rollback"
            and last.for_diagnosis != "divergence"
        ):
            condemned = _restore_condemned(last, ctx)
            if condemned is None:
                why = f"roll back {last.knob}={format_value(last.after)} from step {last.step}"
                undo = Action(
                    knob=str(last.knob), value=last.before, reason=why, rolls_back=last.command_id
                )
                return [undo], []
            notes.append(
                f"not rolling back {last.knob}={format_value(last.after)} from step "
                f"{last.step}: restoring {last.knob}={format_value(last.before)} {condemned}"
            )
        actions = _lr(0.1, ctx)
        clip = ctx.knobs.get("grad_clip")
        exploded = "grad" in str(diagnosis.evidence.get("signal", "")) or "grad" in (
            diagnosis.metric
        )
        if exploded and clip is not None and clip.value == 0:
            actions.append(Action(knob="grad_clip", value=self.grad_clip_on, reason="grad norm"))
        return actions, notes

    def _damaged(self, diagnosis: Diagnosis, ctx: PolicyContext) -> tuple[list[Action], list[str]]:
        """A network that lost its progress is past what an lr cut can mend: rewind to the
        best snapshot (else the newest from before the best step) and go on with lr x0.5."""
        best_step = diagnosis.evidence.get("best_step")
        best = next((s for s in ctx.snapshots if s.best), None)
        good = [s for s in ctx.snapshots if isinstance(best_step, int) and s.step <= best_step]
        if best is not None:
            rewind = Action.rewind("best", reason="back to the best snapshot")
        elif good:
            rewind = Action.rewind("step", to_step=good[-1].step, reason="back before the damage")
        else:
            kept = ", ".join(str(s.step) for s in ctx.snapshots) or "none"
            note = (
                f"no snapshot from before the damage to rewind to (kept: {kept}); lr x"
                f"{self.damaged_lr:g} alone"
            )
            return _lr(self.damaged_lr, ctx), [note]
        return [rewind, *_lr(self.damaged_lr, ctx)], []

    def _after_reflex(
        self, diagnosis: Diagnosis, ctx: PolicyContext
    ) -> tuple[list[Action], list[str]]:
        """The kernel rewound a spike by itself (restoring the knobs of its snapshot): nothing
        to roll back, so keep lr lower than the value the spike grew from (as OPT's restarts
        did), and clip the gradients when they were what blew up."""
        note = (
            f"the kernel's reflex already rewound to step {diagnosis.evidence.get('rewound_to')}"
            " (its knobs restored): lr is kept lower from there, nothing is rolled back"
        )
        actions = _lr(self.after_reflex_lr, ctx)
        clip = ctx.knobs.get("grad_clip")
        if is_grad_norm(diagnosis.metric) and clip is not None and clip.value == 0:
            actions.append(Action(knob="grad_clip", value=self.grad_clip_on, reason="grad norm"))
        return actions, [note]


def _recalled(diagnosis: Diagnosis, ctx: PolicyContext) -> list[Action]:
    """The start plan a ``recall`` diagnosis carries: ``x:<knob>`` factors, for the knobs
    this run has."""
    actions = []
    for key, factor in diagnosis.evidence.items():
        knob = key.removeprefix(RECALL_PREFIX)
        if key.startswith(RECALL_PREFIX) and knob in ctx.knobs and isinstance(factor, float):
            actions.append(Action(knob=knob, multiplier=factor, reason="memory"))
    return actions


def _priors(
    diagnosis: Diagnosis, actions: list[Action], ctx: PolicyContext
) -> tuple[list[Action], list[str]]:
    """``actions`` with what earlier runs measured (``ctx.lessons``): a move that was
    mostly neutral or worse for this diagnosis there is skipped (for a plateau the other way
    is tried when that one was measured better), and a move that worked takes the factor
    that worked. A weak lesson (one observation) only says so; a divergence's answer and
    memory's own plan are never second-guessed."""
    if diagnosis.kind in ("divergence", "recall") or not ctx.lessons:
        return actions, []
    kept: list[Action] = []
    notes: list[str] = []
    for action in actions:
        if action.multiplier is None or action.multiplier == 1.0:
            kept.append(action)
            continue
        up = action.multiplier > 1.0
        lesson = _lesson(ctx, diagnosis.kind, action.knob, up=up)
        if lesson is None:
            kept.append(action)
        elif lesson.weak:
            kept.append(action)
            notes.append(f"memory (weak, not used): {lesson.line()}")
        elif lesson.verdict == "better":
            factor = lesson.factor
            if abs(factor / action.multiplier - 1.0) > 0.1:
                notes.append(
                    f"memory: {lesson.line()}: x{factor:.2g} instead of x{action.multiplier:g}"
                )
                action = Action(knob=action.knob, multiplier=factor, reason=action.reason)
            kept.append(action)
        else:
            other = _lesson(ctx, diagnosis.kind, action.knob, up=not up)
            said = f"{action.describe()} skipped, from memory: {lesson.line()}"
            if (
                diagnosis.kind == "plateau"
                and other is not None
                and other.verdict == "better"
                and not other.weak
            ):
                flipped = Action(knob=action.knob, multiplier=other.factor)
                kept.append(flipped)
                notes.append(f"{said}; {flipped.describe()} instead: {other.line()}")
            else:
                notes.append(said)
    return kept, notes


def _lesson(ctx: PolicyContext, kind: str, knob: str, *, up: bool) -> Lesson | None:
    """The heaviest lesson for ``kind`` on ``knob``'s family, moved ``up`` (or down)."""
    family = knob_family(knob)
    direction = "up" if up else "down"
    return next(
        (
            lesson
            for lesson in ctx.lessons
            if lesson.kind == kind and lesson.knob == family and lesson.direction == direction
        ),
        None,
    )


def _went_up(row: LedgerRow) -> bool | None:
    """Whether ``row`` moved its knob up (None: not two numbers, or no move)."""
    before, after = row.before, row.after
    if isinstance(before, bool) or isinstance(after, bool):
        return None
    if isinstance(before, float | int) and isinstance(after, float | int) and after != before:
        return after > before
    return None


def _steered(
    diagnosis: Diagnosis, actions: list[Action], ctx: PolicyContext
) -> tuple[list[Action], list[str]]:
    """``actions`` steered by what was measured: a change whose last move of the same knob
    the same way was measured ``neutral`` or ``worse`` is not repeated; for a plateau, which
    allows either way, the other direction is tried instead, unless it was measured no
    better either. A divergence's cut is never held back."""
    if diagnosis.kind == "divergence":
        return actions, []
    kept: list[Action] = []
    notes: list[str] = []
    for action in actions:
        if action.multiplier is None or action.multiplier == 1.0:
            kept.append(action)
            continue
        up = action.multiplier > 1.0
        last = _last_move(ctx, action.knob, up=up)
        verdict = ctx.effects.get(last.command_id or "") if last is not None else None
        if verdict not in ("neutral", "worse") or last is None:
            kept.append(action)
            continue
        said = (
            f"{action.describe()} not repeated: the last such change ({last.command_id} at "
            f"step {last.step}) was measured {verdict}"
        )
        other = _last_move(ctx, action.knob, up=not up)
        other_verdict = ctx.effects.get(other.command_id or "") if other is not None else None
        flipped = Action(knob=action.knob, multiplier=1.0 / action.multiplier)
        if diagnosis.kind != "plateau":
            notes.append(said)
        elif other_verdict not in ("neutral", "worse"):
            kept.append(flipped)
            notes.append(f"{said}; trying {flipped.describe()} instead")
        else:
            where = f" ({other.command_id} at step {other.step})" if other is not None else ""
            notes.append(
                f"{said}, and {flipped.describe()}{where} was measured {other_verdict}: "
                "nothing left to try"
            )
    return kept, notes


def _last_move(ctx: PolicyContext, knob: str, *, up: bool) -> LedgerRow | None:
    """The autopilot's last applied change of ``knob``'s family that moved it ``up`` (or
    down), from the ledger rows' values."""
    family = knob_family(knob)
    for row in reversed(ctx.recent_changes):
        if row.knob is None or knob_family(row.knob) != family:
            continue
        if row.decision != "applied" or not by_autopilot(row):
            continue
        before, after = row.before, row.after
        numbers = isinstance(before, float | int) and isinstance(after, float | int)
        if numbers and after != before and (after > before) == up:  # type: ignore[operator]
            return row
    return None


def _restore_condemned(last: LedgerRow, ctx: PolicyContext) -> str | None:
    """Why restoring the value from before ``last`` goes against this tick's diagnoses, or
    ``None``. It is judged from the value ``last`` set and from the value in force now (a
    scheduler may have moved it since): an lr back above either, like the buggy 0.3 after an
    oscillation cut to 0.15, is what the divergence condemns."""
    knob = str(last.knob)
    kinds = [d.kind for d in ctx.diagnoses]
    for reference in (last.after, ctx.knobs[knob].value):
        why = against(kinds, knob, reference, last.before)
        if why is not None:
            return why
    return None


def _lr(factor: float, ctx: PolicyContext) -> list[Action]:
    if "lr" not in ctx.knobs:
        return []
    return [Action(knob="lr", multiplier=factor)]


def _below(value: object, limit: float) -> bool:
    if isinstance(value, list):
        return all(v < limit for v in value)
    return isinstance(value, float | int) and value < limit


def _positive(value: object) -> bool:
    if isinstance(value, list):
        return any(v > 0 for v in value)
    return isinstance(value, float | int) and not isinstance(value, bool) and value > 0


def _last_autopilot_change(rows: list[LedgerRow]) -> LedgerRow | None:
    changes = [
        r for r in rows if r.decision == "applied" and by_autopilot(r) and r.knob is not None
    ]
    return changes[-1] if changes else None
