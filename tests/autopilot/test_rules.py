"""The rule policy: a fixed answer per diagnosis, from the run's real knobs."""

from __future__ import annotations

import time

from autopilot.diagnoses import Diagnosis, DiagnosisKind
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from kernel import KnobSpec, LedgerRow

KNOBS = {
    "lr": KnobSpec(name="lr", kind="float", lo=1e-7, hi=10.0, scale="log", value=0.1),
    "weight_decay": KnobSpec(name="weight_decay", kind="float", lo=0.0, hi=1.0, value=0.01),
    "grad_clip": KnobSpec(name="grad_clip", kind="float", lo=0.0, hi=1e4, value=0.0),
}


def diag(
    kind: DiagnosisKind, step: int = 1000, **evidence: float | int | str | bool | None
) -> Diagnosis:
    return Diagnosis(
        kind=kind, metric="val/loss", step=step, message=f"{kind} seen", evidence=evidence
    )


def row(step: int, knob: str, before: float, after: float, source: str = "rules", **fields):
    return LedgerRow(
        seq=step,
        step=step,
        wall_time=time.time(),
        decision="applied",
        source=source,
        knob=knob,
        before=before,
        after=after,
        command_id=f"c{step}",
        **fields,
    )


def ctx(*diagnoses: Diagnosis, changes=(), knobs=KNOBS, step: int = 1000) -> PolicyContext:
    return PolicyContext(
        step=step,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=list(diagnoses),
        knobs=dict(knobs),
        recent_changes=list(changes),
    )


def described(c: PolicyContext) -> list[str]:
    return [a.describe() for a in RulePolicy().propose(c).actions]


def test_each_diagnosis_has_its_rule() -> None:
    assert described(ctx(diag("plateau"))) == ["lr x0.5"]
    assert described(ctx(diag("oscillation"))) == ["lr x0.5"]
    assert described(ctx(diag("overfitting"))) == ["weight_decay x2"]
    assert described(ctx(diag("divergence"))) == ["lr x0.1"]


def test_overfitting_without_weight_decay_lowers_the_lr() -> None:
    off = {**KNOBS, "weight_decay": KNOBS["weight_decay"].model_copy(update={"value": 0.0})}
    assert described(ctx(diag("overfitting"), knobs=off)) == ["lr x0.5"]


def test_exploding_gradients_turn_clipping_on() -> None:
    d = Diagnosis(kind="divergence", metric="grad/norm", step=1000, message="grad norm x40")
    assert described(ctx(d)) == ["lr x0.1", "grad_clip=1"]


def test_divergence_right_after_an_autopilot_change_rolls_it_back() -> None:
    c = ctx(diag("divergence"), changes=[row(950, "lr", 0.1, 0.2, for_diagnosis="plateau")])
    (undo,) = RulePolicy().propose(c).actions
    assert (undo.describe(), undo.rolls_back) == ("lr=0.1", "c950")


def test_a_divergence_response_is_never_rolled_back_and_humans_are_not_undone() -> None:
    mine = row(950, "lr", 0.1, 0.01, for_diagnosis="divergence")
    assert described(ctx(diag("divergence"), changes=[mine])) == ["lr x0.1"]
    human = row(950, "lr", 0.1, 0.2, source="human")
    assert described(ctx(diag("divergence"), changes=[human])) == ["lr x0.1"]
    undo = row(950, "lr", 0.2, 0.1, intent="rollback", rolls_back="c900")
    assert described(ctx(diag("divergence"), changes=[undo])) == ["lr x0.1"]


def test_what_a_change_was_for_is_read_from_its_fields_never_its_reason() -> None:
    """The bug: a divergence fix approved in review had the reason "approved in review ..."
    and was later proposed for rollback, because only a reason starting with "divergence"
    counted as a divergence response."""
    approved = row(950, "lr", 0.1, 0.01, for_diagnosis="divergence",
                   reason="approved in review rv-1; lr 0.1 -> 0.01")  # fmt: skip
    assert described(ctx(diag("divergence"), changes=[approved])) == ["lr x0.1"]
    worded = row(950, "lr", 0.1, 0.2, for_diagnosis="plateau", reason="divergence-like wording")
    assert described(ctx(diag("divergence"), changes=[worded])) == ["lr=0.1"]
    prose = row(900, "lr", 0.05, 0.1, reason="rollback: lr=0.05 from step 780")
    assert described(ctx(diag("plateau"), changes=[prose])) == ["lr x0.5"]


def test_a_knob_rolled_back_lately_is_left_alone() -> None:
    undo = row(900, "lr", 0.05, 0.1, intent="rollback", rolls_back="c780")
    proposal = RulePolicy().propose(ctx(diag("plateau"), changes=[undo]))
    assert proposal.actions == [] and "rolled back at step 900" in proposal.reasoning
    assert described(ctx(diag("plateau"), changes=[undo], step=2000)) == ["lr x0.5"]
    assert described(ctx(diag("divergence"), changes=[undo])) == ["lr x0.1"]


def test_after_a_rollback_the_rollbacks_own_direction_is_tried() -> None:
    undid_a_cut = row(900, "lr", 0.05, 0.1, intent="rollback", rolls_back="c780")  # went up
    slow = diag("plateau", slow=True, update_ratio=4e-4)
    assert described(ctx(slow, changes=[undid_a_cut])) == ["lr x2"]
    undid_a_raise = row(900, "lr", 0.2, 0.1, intent="rollback", rolls_back="c780")  # went down
    assert described(ctx(slow, changes=[undid_a_raise])) == []
    assert described(ctx(diag("plateau"), changes=[undid_a_raise])) == ["lr x0.5"]


def test_a_weight_decay_that_acts_as_none_is_turned_on() -> None:
    tiny = {**KNOBS, "weight_decay": KNOBS["weight_decay"].model_copy(update={"value": 1e-5})}
    proposal = RulePolicy().propose(ctx(diag("overfitting"), knobs=tiny))
    assert [(a.knob, a.value) for a in proposal.actions] == [("weight_decay", 1e-2)]
    assert described(ctx(diag("overfitting"))) == ["weight_decay x2"]  # 0.01: on already


def test_no_knob_no_action() -> None:
    assert described(ctx(diag("plateau"), knobs={})) == []
    assert RulePolicy().propose(ctx()).diagnosis == "healthy"
