"""The direction guard: a diagnosis allows a knob to move one way only (no lr increase while
diverging, no weight-decay cut while overfitting), unless a person approves the change.

The bug: during a divergence, an LLM answer of lr = 1e9 was schema-valid, so the guards only
capped it to x2 and lr went 0.5 -> 1.0 (0.3 -> 0.6 in the report) mid-divergence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _runs import mul, spec, val, write_run
from llm_server import Body, answer
from test_graph import BUG_LR, BUG_STEP, Training, commands, decisions, keeps_diverging
from test_graph_ai import settled_until

from autopilot.config import Settings
from autopilot.decisions import DecisionRecord
from autopilot.directions import FORBIDDEN, against
from autopilot.errors import ReviewError
from autopilot.guards import GuardContext, Verdict, check
from autopilot.proposals import Action, Proposal
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from kernel import read_ledger

SETTINGS = Settings()


def ctx(**kw) -> GuardContext:
    knobs = [
        spec("lr", 0.1, lo=1e-7, hi=10.0),
        spec("weight_decay", 0.01, lo=0.0, hi=1.0),
        spec("momentum", 0.9, lo=0.0, hi=0.999),
        spec("grad_clip", 1.0, lo=0.0, hi=1e4),
        spec("loss.aux", 0.5, lo=0.0, hi=10.0),
    ]
    return GuardContext(step=1000, knobs={k.name: k for k in knobs}, **kw)


def judged(kind: str | None, *actions: Action, proposer: str = "ai", **kw) -> list[Verdict]:
    by_person = kw.pop("by_person", ())
    p = Proposal(proposer=proposer, diagnosis=f"{kind}", kind=kind, actions=list(actions))  # type: ignore[arg-type]
    return check(p, ctx(**kw), SETTINGS, by_person=by_person)


def test_no_lr_increase_while_diverging_or_oscillating() -> None:
    for kind in ("divergence", "oscillation"):
        [up] = judged(kind, val("lr", 1e9))
        assert (up.status, up.rule, up.value) == ("rejected", "direction", None)
        assert f"raise lr during {'a' if kind == 'divergence' else 'an'} {kind}" in up.reason
        assert "unless a person approves" in up.reason
        [down] = judged(kind, mul("lr", 0.5))
        assert (down.status, down.value) == ("allowed", 0.05)


def test_no_looser_clipping_and_no_more_momentum_while_unstable() -> None:
    looser, more = judged("oscillation", mul("grad_clip", 2.0), mul("momentum", 1.05))
    assert (looser.rule, more.rule) == ("direction", "direction")
    assert "loosen grad_clip" in looser.reason and "raise momentum" in more.reason
    [tighter] = judged("divergence", mul("grad_clip", 0.5))
    assert tighter.status == "allowed"
    # the step cap keeps grad_clip=0 at x0.1 here; the table itself calls it turning off
    off = against(("divergence",), "grad_clip", 1.0, 0.0)
    assert off == "would turn grad_clip off during a divergence"


def test_no_weight_decay_cut_while_overfitting_but_the_lr_may_move() -> None:
    cut, off = judged("overfitting", mul("weight_decay", 0.5)) + judged(
        "overfitting", val("weight_decay", 0.0)
    )
    assert (cut.rule, off.rule) == ("direction", "direction")
    assert "lower weight_decay while the run is overfitting" in cut.reason
    up, lr_up = judged("overfitting", mul("weight_decay", 2.0), mul("lr", 2.0))
    assert (up.status, lr_up.status) == ("allowed", "allowed")  # see the table's note on lr


def test_a_plateau_or_a_loss_weight_allows_either_way() -> None:
    assert [v.status for v in judged("plateau", mul("lr", 2.0), mul("weight_decay", 0.5))] == [
        "allowed",
        "allowed",
    ]
    assert judged("divergence", mul("loss.aux", 2.0))[0].status == "allowed"
    assert judged("other", mul("lr", 2.0))[0].status == "allowed"
    assert judged(None, mul("lr", 2.0))[0].status == "allowed"


def test_the_tick_diagnoses_hold_whatever_the_proposal_calls_itself() -> None:
    """An analyst that calls a divergence a plateau does not unlock an lr increase."""
    [up] = judged("plateau", mul("lr", 2.0), diagnosed=("divergence",))
    assert (up.status, up.rule) == ("rejected", "direction")


def test_a_person_may_push_either_way() -> None:
    [edited] = judged("divergence", mul("lr", 2.0), by_person={0})
    assert (edited.status, edited.value) == ("allowed", 0.2)
    [human] = judged("divergence", mul("lr", 2.0), proposer="human")
    assert human.status == "allowed"


def test_the_table_names_only_moves_it_can_tell() -> None:
    assert set(FORBIDDEN) == {"divergence", "oscillation", "overfitting"}
    assert against(("divergence",), "lr[1]", [0.1, 0.2], [0.1, 0.3]) is not None  # a group
    assert against(("divergence",), "lr", 0.1, 0.1) is None
    assert against(("divergence",), "grad_clip", 0.0, 1.0) is None  # turning clipping on
    assert against(("plateau", "overfitting"), "lr", 0.1, 1.0) is None


# -- a person approves in review --------------------------------------------------------------
def test_an_unedited_approval_is_held_and_an_edited_one_is_the_persons(tmp_path: Path) -> None:
    write_run(tmp_path, step=1000)
    queue = ReviewQueue(tmp_path, SETTINGS)
    p = Proposal(proposer="ai", diagnosis="divergence", kind="divergence", actions=[
        mul("lr", 0.5), mul("weight_decay", 2.0)])  # fmt: skip
    verdicts = check(p, GuardContext.from_run(tmp_path), SETTINGS)
    queue.add(queue.new_item(step=1000, proposal=p, verdicts=verdicts, item_id="rv-1"))
    approval = queue.approve("rv-1", edits=[mul("lr", 2.0)])
    lr = approval.verdicts[0]
    assert (lr.status, lr.value) == ("allowed", 0.2)
    # both ordered by the person; the unedited one is still the AI's idea (and held by the
    # direction guard as such), the edited one is the person's own
    assert [(c.knob, c.source, c.proposed_by) for c in approval.commands] == [
        ("lr", "human", None),
        ("weight_decay", "human", "ai"),
    ]
    up = Proposal(proposer="ai", diagnosis="divergence", kind="divergence", actions=[
        mul("lr", 2.0)])  # fmt: skip
    queue.add(queue.new_item(step=1000, proposal=up, verdicts=[], item_id="rv-2"))
    with pytest.raises(ReviewError, match="the guards reject every action now"):
        queue.approve("rv-2", current_step=1100)


# -- the repro, through the real graph ---------------------------------------------------------
WILD = {
    "actions": [
        {"knob": "lr", "value": 1e9, "reason": "go big"},
        {"knob": "weight_decay", "multiplier": 2, "reason": "more"},
    ],
    "confidence": 0.9,
}


def _scripted(analyst_kind: str):
    analyst = {
        "kind": analyst_kind,
        "metric": "train/loss",
        "summary": "train/loss five times its best",
        "confidence": 0.9,
    }

    def reply(body: Body) -> Any:
        schema = body["response_format"]["json_schema"]["name"]
        return answer(analyst if schema == "AnalystOutput" else WILD)(body)

    return reply


@pytest.mark.parametrize("analyst_kind", ["divergence", "plateau"])
def test_an_llm_answer_of_lr_1e9_during_a_divergence_never_raises_lr(
    analyst_kind, llm_server, make_settings, make_kernel, run_dir
):
    """The cooldowns are short, so the direction guard is what holds the answer (whether it is
    judged in the tick that found the divergence or in a later one). The answer is judged after
    the global cooldown of the rules' urgent cut has passed: judged inside it (an answer that
    came in the next tick), the whole proposal is rejected by ``global_cooldown`` instead,
    which made this test depend on the LLM's latency."""
    llm_server.script(_scripted(analyst_kind))
    settings = make_settings(guards={"cooldown_steps": 10, "global_cooldown_steps": 10})
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
        run.set_lr(BUG_LR)
        run.until(pilot.context.llm_calls.busy, pilot)  # the urgent tick: rules cut, LLM asked
        assert pilot.context.llm_calls.wait(20), "the LLM call did not settle"
        run.train(settings.guards.global_cooldown_steps)  # no tick: the cut's cooldown passes
        record = settled_until(run, pilot, lambda: _answered(run_dir))
        run.train(20, pilot)
    assert record.diagnoses[0].kind == "divergence"
    lr, wd = record.verdicts
    assert (lr.status, lr.rule) == ("rejected", "direction")
    assert "raise lr during a divergence" in lr.reason
    assert wd.status == "allowed"
    assert [c.knob for c in commands(run_dir) if c.decision_id == record.id] == ["weight_decay"]
    lr_rows = [r for r in read_ledger(run_dir) if r.knob == "lr" and r.decision == "applied"]
    assert all(float(r.after) <= float(r.before) for r in lr_rows)  # type: ignore[arg-type]
    assert run.lr <= BUG_LR


def _answered(run_dir: Path) -> DecisionRecord | None:
    return next((d for d in decisions(run_dir) if d.proposer == "ai" and d.verdicts), None)
