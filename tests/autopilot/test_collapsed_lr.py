"""A collapsed learning rate is raised, not cut further (issue 12).

The bug: lr collapses x1e-3 mid-run; the plateau rule halved it down to the 1e-7 floor and
the run ended worse than with no autopilot. The plateau detector now says, as data, that
the lr collapsed (``lr_collapsed``: below 10 % of its peak after a drop no schedule makes),
and the rule policy raises it instead.
"""

from __future__ import annotations

import pytest
from test_detectors_context import (
    LINEAR_DECAY,
    ONE_STEP_COLLAPSE,
    SHORT,
    TAIL,
    diagnoses_at,
    tail_run,
)

from autopilot.diagnoses import Diagnosis
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from kernel import KnobSpec


@pytest.mark.parametrize("seed", range(3))
def test_the_plateau_after_a_one_step_collapse_says_the_lr_collapsed(seed: int) -> None:
    found = [diagnoses_at(tail_run(0.3, ONE_STEP_COLLAPSE, seed), s) for s in TAIL]
    assert all(f and f[0].kind == "plateau" for f in found)
    collapsed = found[-1][0].evidence["lr_collapsed"]
    assert collapsed == pytest.approx(1e-3)
    assert "lr is 0.001 of its peak" in found[-1][0].message


def test_a_plateau_without_a_collapse_does_not_say_so() -> None:
    # still-high losses, so the linear decay's tail is a plateau; the decay is no collapse
    [plateau] = diagnoses_at(tail_run(4.0, LINEAR_DECAY), SHORT)
    assert plateau.kind == "plateau" and "lr_collapsed" not in plateau.evidence
    [no_lr] = diagnoses_at(tail_run(0.3, None), SHORT)
    assert "lr_collapsed" not in no_lr.evidence


def _context(diagnosis: Diagnosis) -> PolicyContext:
    lr = KnobSpec(name="lr", kind="float", lo=1e-7, hi=10.0, value=1e-6)
    return PolicyContext(
        step=diagnosis.step,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[diagnosis],
        knobs={"lr": lr},
    )


def test_the_rules_raise_a_collapsed_lr_and_cut_an_ordinary_plateaus() -> None:
    collapsed = Diagnosis(kind="plateau", metric="val/loss", step=2000, message="flat",
                          evidence={"lr_collapsed": 1e-3})  # fmt: skip
    proposal = RulePolicy().propose(_context(collapsed))
    assert [a.describe() for a in proposal.actions] == ["lr x2"]
    assert "a collapsed lr is raised, not cut" in proposal.reasoning
    ordinary = collapsed.model_copy(update={"evidence": {}})
    assert [a.describe() for a in RulePolicy().propose(_context(ordinary)).actions] == ["lr x0.5"]
