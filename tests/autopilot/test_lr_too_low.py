"""An lr too low is raised and one too high is cut: slow progress with a tiny update ratio
is a plateau with ``slow`` evidence (lr x2), big steps with little progress an oscillation
with ``too_big`` evidence (lr x0.5); a healthy ratio or fast progress is left alone; the
kernel measures the ratio early and again after an lr change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autopilot.config import Settings
from autopilot.detectors import default_detectors, diagnose
from autopilot.guard_context import GuardContext
from autopilot.guards import Verdict, check
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from autopilot.proposals import Action, Proposal
from autopilot.summary import Windows, summarize
from kernel import Command, Kernel, KernelSettings, KnobSpec, append_command
from kernel.update_ratio import METRIC as UPDATE_RATIO

STEPS = [float(s) for s in range(0, 320, 20)]


def _windows(ratio: float, end: float) -> Windows:
    val = [2.3 + (end - 2.3) * i / (len(STEPS) - 1) for i in range(len(STEPS))]
    return {
        "val/loss": [STEPS, val],
        "lr": [STEPS, [1e-4] * len(STEPS)],
        UPDATE_RATIO: [[200.0], [ratio]],  # measured at step 200
    }


def _found(windows: Windows):
    early = {"val/loss": windows["val/loss"][1][:5]}
    summary = summarize(
        windows, {}, step=300, key_metric="val/loss", key_mode="min", early=early, max_steps=600
    )
    return diagnose(summary, windows, default_detectors(Settings().detectors))


def test_slow_progress_with_a_tiny_update_ratio_is_an_lr_too_low() -> None:
    [found] = _found(_windows(ratio=4e-4, end=2.0))
    assert found.kind == "plateau" and found.evidence["slow"] is True
    ctx = PolicyContext(
        step=300,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[found],
        knobs={"lr": KnobSpec(name="lr", kind="float", value=1e-4, lo=1e-7, hi=1.0)},
    )
    proposal = RulePolicy().propose(ctx)
    assert [(a.knob, a.multiplier) for a in proposal.actions] == [("lr", 2.0)]


def test_a_healthy_ratio_or_real_progress_is_left_alone() -> None:
    assert _found(_windows(ratio=6e-3, end=2.0)) == []
    assert _found(_windows(ratio=4e-4, end=0.5)) == []


def test_the_kernel_measures_the_ratio_early_and_after_an_lr_change(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = KernelSettings(poll_interval_s=0.0, flush_interval_s=0.0)
    seen: list[int] = []
    with Kernel(tmp_path, optimizer=opt, settings=settings) as kernel:
        for step in range(1, 80):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            kernel.log(step, {"train/loss": loss.item()})
            if step == 50:
                append_command(tmp_path, Command(id="up", source="human", knob="lr", value=2e-3))
            kernel.step(step)
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        if UPDATE_RATIO in line:
            seen.append(int(line.split('"step":')[1].split(",")[0]))
    assert seen == [22, 54]  # logged with the step after: early (20), 3 safe points after 50


def test_a_collapsed_lr_is_restored_to_the_value_before_the_drop() -> None:
    windows = _windows(ratio=4e-7, end=2.2)
    windows["lr"] = [STEPS, [1e-2, 1e-2] + [1e-5] * (len(STEPS) - 2)]
    early = {"val/loss": windows["val/loss"][1][:5]}
    summary = summarize(
        windows,
        {},
        step=300,
        key_metric="val/loss",
        key_mode="min",
        early=early,
        peak={"lr": [1e-2, 20, 1e-5, 0.999]},
        max_steps=600,
    )
    [found] = diagnose(summary, windows, default_detectors(Settings().detectors))
    assert found.evidence["lr_before"] == 1e-2
    ctx = PolicyContext(
        step=300,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[found],
        knobs={"lr": KnobSpec(name="lr", kind="float", value=1e-5, lo=1e-7, hi=1.0)},
    )
    [action] = RulePolicy().propose(ctx).actions
    assert (action.knob, action.value, action.restores) == ("lr", 1e-2, True)


def test_a_restore_may_pass_max_up_only_up_to_the_runs_own_peak() -> None:
    knobs = {"lr": KnobSpec(name="lr", kind="float", value=1e-5, lo=1e-7, hi=1.0)}
    ctx = GuardContext(step=300, knobs=knobs, logged_peak={"lr": 1e-2})
    settings = Settings()

    def verdict(**action: Any) -> Verdict:
        return check(
            Proposal(proposer="rules", diagnosis="", actions=[Action(knob="lr", **action)]),
            ctx,
            settings,
        )[0]

    assert verdict(value=1e-2, restores=True).value == 1e-2
    assert verdict(value=1e-2).value == 2e-5  # not a restore: x2 at most (guards.max_up)
    assert verdict(value=0.1, restores=True).value == 2e-5  # above anything the run logged


def test_big_steps_with_little_progress_are_an_lr_too_high() -> None:
    [found] = _found(_windows(ratio=3.7e-2, end=2.0))
    assert found.kind == "oscillation" and found.evidence["too_big"] is True
    assert _found(_windows(ratio=1.2e-2, end=2.0)) == []  # a healthy run's largest ratio
    assert _found(_windows(ratio=3.7e-2, end=0.5)) == []  # big steps, but learning fast


def test_a_large_ratio_from_the_first_steps_is_not_judged() -> None:
    early_reading = _windows(ratio=3.3e-2, end=2.0)
    early_reading[UPDATE_RATIO] = [[20.0], [3.3e-2]]
    assert not [d for d in _found(early_reading) if d.evidence.get("too_big")]
