"""The tuner's policy on a toy objective: TPE, told real values, moves its proposals toward
the optimum, and a second policy on the same SQLite file goes on from the first's trials."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

import pytest
from optuna.trial import TrialState

from autopilot.policies._base import PolicyContext
from autopilot.policies.tune import TunePolicy, param_name
from kernel import KnobSpec
from memory.tuner import RUN_ID, open_study

BEST_LOG2 = -0.5
"""The toy optimum: lr x0.71 (the search spans x0.5 to x2)."""


def toy_score(factor: float) -> float:
    """A measured effect that peaks at lr x0.71 and falls off on both sides."""
    return 0.2 - (math.log2(factor) - BEST_LOG2) ** 2


def drive(policy: TunePolicy, trials: int) -> list[float]:
    """Ask and tell ``trials`` trials; the distance of each proposal from the optimum."""
    distances = []
    for _ in range(trials):
        asked = policy.ask({"lr": 0.01})
        action = asked.proposal.actions[0]
        assert action.knob == "lr" and action.multiplier is not None
        distances.append(abs(math.log2(asked.factors["lr"]) - BEST_LOG2))
        policy.tell(asked.trial, toy_score(asked.factors["lr"]))
    return distances


def test_it_learns_the_toy_optimum(tmp_path: Path) -> None:
    stored = open_study(tmp_path / "memory.sqlite", "tune-toy-lr", seed=3, n_startup_trials=4)
    policy = TunePolicy(stored, knobs=["lr"], run_id="toy")
    distances = drive(policy, 25)
    assert fmean(distances[-8:]) < 0.75 * fmean(distances[:8])  # seeds 0-7: 0.30-0.54 of it
    trials = stored.study.get_trials()
    assert len(trials) == 25
    assert all(t.state == TrialState.COMPLETE and t.value is not None for t in trials)
    assert all(t.user_attrs[RUN_ID] == "toy" for t in trials)
    best = stored.study.best_trial.params[param_name("lr")]
    assert abs(best - BEST_LOG2) < 0.3


def test_a_second_run_starts_warm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    first = TunePolicy(open_study(url, "tune-toy-lr", seed=3), knobs=["lr"], run_id="run-1")
    drive(first, 12)
    second = TunePolicy(open_study(url, "tune-toy-lr", seed=4), knobs=["lr"], run_id="run-2")
    assert len(second.study.trials) == 12  # run 1's trials, read back from the file
    later = drive(second, 4)
    assert fmean(later) < 0.35  # no random start-up again (random: 0.63): TPE exploits
    runs = [t.user_attrs[RUN_ID] for t in second.study.get_trials()]
    assert runs == ["run-1"] * 12 + ["run-2"] * 4


def test_the_search_stays_inside_the_per_step_guard(tmp_path: Path) -> None:
    stored = open_study(tmp_path / "m.sqlite", "tune-t-lr")
    policy = TunePolicy(stored, knobs=["lr", "weight_decay"], max_factor=8.0, max_up=2.0)
    assert policy.log2_range == (-1.0, 1.0)  # symmetric, and within guards.max_up
    asked = policy.ask({"lr": 0.1, "grad_clip": 0.0})  # a run without weight decay
    assert set(asked.factors) == {"lr"} and 0.5 <= asked.factors["lr"] <= 2.0
    with pytest.raises(ValueError, match="names none of the run's knobs"):
        policy.ask({"grad_clip": 0.0})
    with pytest.raises(ValueError, match="must hold 1 on both sides"):
        TunePolicy(stored, knobs=["lr"], max_up=1.0)


def test_a_clamped_trial_is_replaced_by_the_applied_factor(tmp_path: Path) -> None:
    stored = open_study(tmp_path / "m.sqlite", "tune-t-lr")
    policy = TunePolicy(stored, knobs=["lr"], run_id="r")
    asked = policy.ask({"lr": 0.1})
    again = policy.replace(asked.trial, {"lr": 1.25}, why="lr: bounds")
    assert again.trial == asked.trial + 1
    assert again.factors["lr"] == pytest.approx(1.25)
    trials = stored.study.get_trials()
    assert trials[asked.trial].state == TrialState.FAIL
    assert trials[again.trial].user_attrs["replaces"] == asked.trial


def test_it_proposes_through_the_policy_interface(tmp_path: Path) -> None:
    stored = open_study(tmp_path / "m.sqlite", "tune-t-lr", seed=0)
    ctx = PolicyContext(
        step=300,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[],
        knobs={"lr": KnobSpec(name="lr", kind="float", value=0.01, lo=1e-6, hi=1.0)},
    )
    proposal = TunePolicy(stored, knobs=["lr"]).propose(ctx)
    assert (proposal.proposer, proposal.trial, proposal.actions[0].knob) == ("tune", 0, "lr")
    assert stored.study.get_trials()[0].state == TrialState.RUNNING  # told once measured
