"""Structured intent end to end: what a command is for travels as typed fields from the
autopilot through the kernel into the ledger, and is read from there, never from prose."""

from __future__ import annotations

from pathlib import Path

import torch
from _runs import mul, proposal
from test_graph import (
    Training,
    applied,
    commands,
    decisions,
    effects,
    flat_and_hurt_by_lower_lr,
    rule_settings,
)

from autopilot.config import Settings
from autopilot.diagnoses import Diagnosis
from autopilot.guards import GuardContext, check
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from kernel import read_ledger


def divergence(step: int) -> Diagnosis:
    return Diagnosis(kind="divergence", metric="val/loss", step=step, message="val/loss x3")


def test_a_divergence_fix_approved_in_review_is_never_rolled_back(make_kernel, run_dir) -> None:
    """The bug: the fix got the reason "approved in review ..." and, since only a reason
    starting with "divergence" counted as a divergence response, the next divergence
    proposed to roll it back."""
    opt = torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.5)
    kernel = make_kernel(optimizer=opt)
    kernel.step(1)
    queue = ReviewQueue(run_dir, Settings())
    p = proposal(mul("lr", 0.1)).model_copy(update={"kind": "divergence"})
    verdicts = check(p, GuardContext.from_run(run_dir), queue.settings)
    item = queue.new_item(
        step=1, proposal=p, verdicts=verdicts, diagnoses=[divergence(1)], item_id="d1-abc"
    )
    queue.add(item)
    queue.approve("d1-abc")
    kernel.step(2)
    (row,) = read_ledger(run_dir)
    assert (row.decision, row.after) == ("applied", 0.05)
    assert (row.reason or "").startswith("approved in review d1-abc")
    assert (row.for_diagnosis, row.decision_id, row.intent) == ("divergence", "d1-abc", "set")
    ctx = PolicyContext(
        step=40,
        mode="suggest",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[divergence(40)],
        knobs=GuardContext.from_run(run_dir).knobs,
        recent_changes=[row],
    )
    assert [a.describe() for a in RulePolicy().propose(ctx).actions] == ["lr x0.1"]


def test_auto_sends_and_the_ledger_records_a_rollback_as_one(make_kernel, run_dir, tmp_path: Path):
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="auto", settings=rule_settings(tmp_path)) as pilot:
        [record] = run.until(lambda: decisions(run_dir), pilot)
        [effect] = run.until(lambda: effects(run_dir), pilot)
        run.train(1)
    assert effect.rolled_back
    change, rollback = commands(run_dir)
    assert (change.intent, change.decision_id, change.for_diagnosis) == (
        "set",
        record.id,
        "plateau",
    )
    assert (rollback.intent, rollback.rolls_back) == ("rollback", change.id)
    assert rollback.decision_id == record.id
    (row,) = applied(run_dir, rollback.id)
    assert (row.intent, row.rolls_back, row.decision_id) == ("rollback", change.id, record.id)
    (first,) = applied(run_dir, change.id)
    assert (first.intent, first.for_diagnosis) == ("set", "plateau")
