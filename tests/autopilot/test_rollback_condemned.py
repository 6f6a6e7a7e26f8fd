"""A rollback never restores a value that the divergence itself, or a measured effect,
condemns.

The bug: "roll back the last autopilot change on a divergence" put lr back to 0.3, the
user's buggy value, because an oscillation cut (0.3 -> 0.15) came between the bug and the
divergence alarm; the effects' rollback of that cut, measured worse while the bug still
diverged, would have done the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _runs import spec, write_run
from test_rules import KNOBS, ctx, diag, row

from autopilot.config import Settings
from autopilot.decisions import DecisionLog, EffectRecord, parse_record
from autopilot.effects import Effects
from autopilot.guards import GuardContext, check
from autopilot.policies.rules import RulePolicy
from autopilot.proposals import Action, Proposal
from kernel import LedgerRow
from kernel.ledger import Ledger

BUG, CUT = 0.3, 0.15
LR_AT_CUT = {**KNOBS, "lr": spec("lr", CUT, lo=1e-7, hi=10.0, scale="log")}


# -- the rule policy -------------------------------------------------------------------------
def test_a_divergence_after_an_oscillation_cut_cuts_again_instead_of_restoring_the_bug() -> None:
    cut = row(950, "lr", BUG, CUT, for_diagnosis="oscillation")
    proposal = RulePolicy().propose(ctx(diag("divergence"), changes=[cut], knobs=LR_AT_CUT))
    assert [a.describe() for a in proposal.actions] == ["lr x0.1"]
    assert all(a.rolls_back is None for a in proposal.actions)
    assert "not rolling back lr=0.15 from step 950" in proposal.reasoning
    assert "restoring lr=0.3 would raise lr during a divergence" in proposal.reasoning


def test_a_change_that_raised_the_lr_is_still_rolled_back() -> None:
    up = row(950, "lr", 0.1, 0.2, for_diagnosis="plateau")
    knobs = {**KNOBS, "lr": spec("lr", 0.2, lo=1e-7, hi=10.0)}
    [undo] = RulePolicy().propose(ctx(diag("divergence"), changes=[up], knobs=knobs)).actions
    assert (undo.describe(), undo.rolls_back) == ("lr=0.1", "c950")


def test_a_value_at_the_one_in_force_when_the_divergence_began_is_not_restored() -> None:
    """The cut came after the divergence began, so lr is back at the buggy value... by a
    scheduler: the current value is the bug's, yet restoring it is still condemned."""
    cut = row(950, "lr", BUG, CUT, for_diagnosis="oscillation")
    knobs = {**KNOBS, "lr": spec("lr", BUG, lo=1e-7, hi=10.0)}
    proposal = RulePolicy().propose(ctx(diag("divergence"), changes=[cut], knobs=knobs))
    assert [a.describe() for a in proposal.actions] == ["lr x0.1"]


# -- the guards, whatever the policy ---------------------------------------------------------
def _guard_ctx(*rows: LedgerRow, worse: frozenset[str] = frozenset(), **kw: Any) -> GuardContext:
    return GuardContext(step=1000, knobs=dict(LR_AT_CUT), history=tuple(rows), worse=worse, **kw)


def _rollback(value: float, of: str = "c950") -> Proposal:
    undo = Action(knob="lr", value=value, rolls_back=of)
    return Proposal(proposer="rules", diagnosis="divergence", kind="divergence", actions=[undo])


def test_the_guards_hold_a_rollback_that_would_restore_the_bug() -> None:
    cut = row(950, "lr", BUG, CUT, for_diagnosis="oscillation")
    [v] = check(_rollback(BUG), _guard_ctx(cut), Settings())
    assert (v.status, v.rule) == ("rejected", "direction")


def test_the_guards_hold_a_rollback_to_a_value_whose_change_was_measured_worse() -> None:
    """c900 set lr 0.1 -> 0.05 and was measured worse; c950 then set 0.05 -> 0.15. Undoing
    c950 would bring back c900's condemned 0.05."""
    bad = row(900, "lr", 0.1, 0.05, for_diagnosis="plateau")
    later = row(950, "lr", 0.05, CUT, for_diagnosis="plateau")
    p = _rollback(0.05).model_copy(update={"kind": "plateau"})
    [v] = check(p, _guard_ctx(bad, later, worse=frozenset({"c900"})), Settings())
    assert (v.status, v.rule) == ("rejected", "condemned")
    assert "c900" in v.reason and "measured worse" in v.reason
    [ok] = check(p, _guard_ctx(bad, later), Settings())
    assert ok.status == "allowed"


# -- the measured effect's rollback ----------------------------------------------------------
def _effects_run(tmp_path: Path, *changes: tuple[str, float, float, int]) -> Effects:
    """A run whose lr is ``CUT`` after ``changes`` (id, before, after, step), in auto mode."""
    write_run(tmp_path, step=1100, knobs=[spec("lr", CUT, lo=1e-7, hi=10.0)])
    ledger = Ledger(tmp_path)
    for command_id, before, after, step in changes:
        ledger.record(step=step, decision="applied", command_id=command_id, source="rules",
                      op="set", knob="lr", before=before, after=after)  # fmt: skip
    settings = Settings.model_validate({"evaluate": {"horizon_steps": 50}})
    return Effects(tmp_path, settings, "auto", DecisionLog(tmp_path))


def _measured_worse_state(decided: dict[str, int]) -> dict[str, Any]:
    """The tick state at step 1100 with the baseline of c1000 (lr 0.3 -> 0.15 at step 1000,
    val/loss level 1.0) and val/loss at 2.0 since: clearly worse than projected."""
    base = {"command_id": "c1000", "decision_id": "d990", "knob": "lr", "source": "rules",
            "before": BUG, "after": CUT, "intent": "set", "for_diagnosis": "oscillation",
            "applied_step": 1000, "level": 1.0, "slope": 0.0, "best_before": 1.0}  # fmt: skip
    steps = list(range(1030, 1101, 10))
    return {
        "step": 1100,
        "key_metric": "val/loss",
        "key_mode": "min",
        "windows": {"val/loss": [steps, [2.0] * len(steps)]},
        "baselines": [base],
        "past": [],
        "decided": decided,
    }


def _commands(run_dir: Path) -> list[str]:
    path = run_dir / "commands.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_a_cut_measured_worse_during_a_divergence_is_not_undone(tmp_path: Path) -> None:
    effects = _effects_run(tmp_path, ("c1000", BUG, CUT, 1000))
    effects.measure_due(_measured_worse_state({"oscillation": 990, "divergence": 1060}))
    [effect] = _effect_records(tmp_path)
    assert effect.verdict == "worse" and not effect.rolled_back
    assert _commands(tmp_path) == []


def test_a_cut_measured_worse_with_no_divergence_since_is_undone(tmp_path: Path) -> None:
    effects = _effects_run(tmp_path, ("c1000", BUG, CUT, 1000))
    effects.measure_due(_measured_worse_state({"oscillation": 990, "divergence": 500}))
    [effect] = _effect_records(tmp_path)
    assert effect.verdict == "worse" and effect.rolled_back
    assert len(_commands(tmp_path)) == 1


def test_an_undo_never_brings_back_a_value_measured_worse(tmp_path: Path) -> None:
    effects = _effects_run(tmp_path, ("c900", 0.1, BUG, 900), ("c1000", BUG, CUT, 1000))
    effects.log.append(
        EffectRecord(
            decision_id="d890",
            command_id="c900",
            knob="lr",
            applied_step=900,
            horizon_steps=50,
            key_metric="val/loss",
            projected=1.0,
            observed=2.0,
            change_rel=-1.0,
            verdict="worse",
            measured_at_step=950,
        )  # fmt: skip
    )
    effects.measure_due(_measured_worse_state({"oscillation": 990}))
    effect = [e for e in _effect_records(tmp_path) if e.command_id == "c1000"][0]
    assert effect.verdict == "worse" and not effect.rolled_back
    assert _commands(tmp_path) == []


def _effect_records(run_dir: Path) -> list[EffectRecord]:
    """Every effect record in the decision log (no decision record is needed for one)."""
    lines = (run_dir / "autopilot" / "decisions.jsonl").read_text().splitlines()
    return [r for r in map(parse_record, lines) if isinstance(r, EffectRecord)]
