"""The rules steered by what was measured (issue 12): a change measured neutral or worse is
not repeated, and a plateau tries the other direction, instead of halving lr every ~110
steps on a run the cuts do not help."""

from __future__ import annotations

import dataclasses

from test_rules import ctx as context
from test_rules import described, diag, row

from autopilot.policies.rules import RulePolicy


def test_a_plateau_whose_last_cut_was_measured_neutral_tries_lr_up() -> None:
    c = dataclasses.replace(
        context(diag("plateau"), changes=[row(800, "lr", 0.2, 0.1)]), effects={"c800": "neutral"}
    )
    proposal = RulePolicy().propose(c)
    assert [a.describe() for a in proposal.actions] == ["lr x2"]
    assert "lr x0.5 not repeated: the last such change (c800 at step 800) was measured neutral" in (
        proposal.reasoning
    )
    assert "trying lr x2 instead" in proposal.reasoning


def test_an_unmeasured_or_better_cut_is_repeated() -> None:
    changes = [row(800, "lr", 0.2, 0.1)]
    assert described(context(diag("plateau"), changes=changes)) == ["lr x0.5"]
    better = dataclasses.replace(
        context(diag("plateau"), changes=changes), effects={"c800": "better"}
    )
    assert described(better) == ["lr x0.5"]


def test_both_directions_measured_no_better_means_no_lr_change() -> None:
    changes = [row(600, "lr", 0.1, 0.2), row(800, "lr", 0.2, 0.1)]
    c = dataclasses.replace(
        context(diag("plateau"), changes=changes), effects={"c600": "worse", "c800": "neutral"}
    )
    proposal = RulePolicy().propose(c)
    assert proposal.actions == []
    assert "not repeated" in proposal.reasoning


def test_other_kinds_are_held_back_but_not_flipped_and_a_divergence_always_cuts() -> None:
    changes = [row(800, "lr", 0.2, 0.1)]
    osc = dataclasses.replace(
        context(diag("oscillation"), changes=changes), effects={"c800": "worse"}
    )
    assert described(osc) == []
    div = dataclasses.replace(context(diag("divergence"), changes=changes, step=2000),
                              effects={"c800": "worse"})  # fmt: skip
    assert described(div) == ["lr x0.1"]


def test_a_weight_decay_raise_measured_neutral_is_not_repeated() -> None:
    changes = [row(800, "weight_decay", 0.01, 0.02)]
    c = dataclasses.replace(
        context(diag("overfitting"), changes=changes), effects={"c800": "neutral"}
    )
    assert described(c) == []
