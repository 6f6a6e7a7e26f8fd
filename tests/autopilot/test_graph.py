"""The tick graph end to end in the rule modes.

A real ``Kernel`` over a tiny SGD optimizer logs loss curves that follow its live ``lr``; an
``Autopilot`` ticks beside it every 10 steps; the tests read what it left in the run
directory: decision and effect records, ``commands.jsonl``, the ledger, the review queue.
``Training`` and the curves are shared with ``test_graph_ai``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from conftest import FAST

from autopilot.config import Settings
from autopilot.decisions import DecisionLog, DecisionRecord, EffectRecord
from autopilot.errors import AutopilotError
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from kernel import (
    Command,
    Kernel,
    LedgerRow,
    append_command,
    parse_command_line,
    read_kernel_state,
    read_ledger,
    write_freeze,
)
from kernel.commands import COMMANDS_FILE

T = TypeVar("T")
Curve = Callable[[int, float], float]

LR = 0.1
BUG_LR = 0.5
"""What a buggy schedule sets at ``BUG_STEP``; above 0.2 the toy run diverges."""
BUG_STEP = 150


# -- loss curves: the loss level at a step under a learning rate ------------------------------
def healthy(step: int, lr: float) -> float:
    return 0.5 + 2.0 * math.exp(-step / 150)


def diverges_above_0_2(step: int, lr: float) -> float:
    """Healthy, but five times higher while lr is above 0.2 (and healthy again below)."""
    return healthy(step, lr) * (5.0 if lr > 0.2 else 1.0)


def keeps_diverging(step: int, lr: float) -> float:
    """Five times higher from ``BUG_STEP`` on, whatever the autopilot does."""
    return healthy(step, lr) * (5.0 if step > BUG_STEP else 1.0)


def flat_and_hurt_by_lower_lr(step: int, lr: float) -> float:
    """Converged by step 300 (a plateau), and worse with any lr below 0.1."""
    return (0.5 + 2.0 * math.exp(-step / 40)) * math.sqrt(max(1.0, LR / lr))


class Training:
    """A tiny SGD run under a real ``Kernel`` (``make_kernel``: FAST cadences) that logs
    ``curve(step, live lr)`` with noise: ``train/loss`` every step, ``val/loss`` every 10."""

    def __init__(self, make_kernel: Callable[..., Kernel], curve: Curve) -> None:
        self.param = torch.nn.Parameter(torch.ones(4))
        self.opt = torch.optim.SGD([self.param], lr=LR, momentum=0.9, weight_decay=1e-4)
        # the logged curve is not this parameter's loss, so its update ratio says nothing
        quiet = dataclasses.replace(FAST, update_ratio_every_steps=0)
        self.kernel = make_kernel(optimizer=self.opt, key_metric="val/loss", settings=quiet)
        self.curve, self.step = curve, 0
        self._rng = random.Random(0)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        """What a (buggy) LR schedule does: the optimizer's lr moves outside any command."""
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train(self, steps: int, pilot: Autopilot | None = None) -> None:
        """``steps`` training steps; ``pilot`` ticks after every 10th."""
        for _ in range(steps):
            self.step += 1
            self._one_step()
            if pilot is not None and self.step % 10 == 0:
                pilot.tick()

    def until(self, found: Callable[[], T], pilot: Autopilot, max_steps: int = 600) -> T:
        """Train (ticking ``pilot``) 10 steps at a time until ``found()`` is truthy."""
        for _ in range(0, max_steps, 10):
            self.train(10, pilot)
            value = found()
            if value:
                return value
        raise AssertionError(f"nothing found after {max_steps} steps (now step {self.step})")

    def _one_step(self) -> None:
        self.param.pow(2).sum().backward()
        self.opt.step()
        self.opt.zero_grad()
        level = self.curve(self.step, self.lr)
        metrics = {"train/loss": level * (1 + 0.03 * self._rng.gauss(0, 1))}
        if self.step % 10 == 0:
            metrics["val/loss"] = 1.1 * level * (1 + 0.01 * self._rng.gauss(0, 1))
        self.kernel.log(self.step, metrics)
        self.kernel.step(self.step)


# -- reading the run directory ------------------------------------------------------------
def decisions(run_dir: Path) -> list[DecisionRecord]:
    return [view.record for view in DecisionLog(run_dir).read()]


def effects(run_dir: Path) -> list[EffectRecord]:
    return [e for view in DecisionLog(run_dir).read() for e in view.effects]


def commands(run_dir: Path) -> list[Command]:
    path = run_dir / COMMANDS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [parse_command_line(line) for line in lines if line.strip()]


def applied(run_dir: Path, command_id: str) -> list[LedgerRow]:
    return [r for r in read_ledger(run_dir) if r.command_id == command_id]


def rule_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings of the rule-mode tests: short patience and horizon, a private day ledger."""
    raw: dict[str, Any] = {
        "budget": {"day_ledger": str(tmp_path / "day-spend.jsonl")},
        "detectors": {"plateau_patience_steps": 50},
        "evaluate": {"horizon_steps": 50},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return Settings.model_validate(raw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return rule_settings(tmp_path)


def diverge(run: Training, pilot: Autopilot) -> DecisionRecord:
    """Train healthily to ``BUG_STEP``, set the buggy lr, and return the first decision."""
    run.train(BUG_STEP, pilot)
    assert decisions(run.kernel.run_dir) == []
    run.set_lr(BUG_LR)
    return run.until(lambda: decisions(run.kernel.run_dir), pilot)[0]


# -- the modes --------------------------------------------------------------------------------
def test_a_healthy_run_gets_no_decision_and_no_command(make_kernel, run_dir, settings):
    run = Training(make_kernel, healthy)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        outcomes = []
        for _ in range(40):
            run.train(10)
            outcomes.append(pilot.tick()["outcome"])
    assert set(outcomes) == {"healthy"}
    assert decisions(run_dir) == [] and commands(run_dir) == []


def test_auto_cuts_the_live_lr_tenfold_when_the_run_diverges(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        record = diverge(run, pilot)
        assert (record.route, record.proposer) == ("kernel", "rules")
        assert record.diagnoses[0].kind == "divergence"
        [command] = commands(run_dir)
        assert command.id in record.command_ids
        assert (command.source, command.proposal_id) == ("rules", record.id)
        assert applied(run_dir, command.id) == []  # the kernel applies it at its next step
        run.train(1)
    [row] = applied(run_dir, command.id)
    # x0.1 of the value kernel.json showed (the buggy 0.5), not of the 0.1 the run started at
    assert (row.decision, row.before, row.after) == ("applied", BUG_LR, pytest.approx(0.05))
    assert record.verdicts[0].before == BUG_LR and run.lr == pytest.approx(0.05)


def test_suggest_queues_the_fix_and_an_approval_applies_it(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    queue = ReviewQueue(run_dir, settings)
    with Autopilot(run_dir, mode="suggest", settings=settings) as pilot:
        record = diverge(run, pilot)
        [item] = queue.items()
        assert (record.route, record.proposal_id, item.id) == ("review", item.id, record.id)
        assert item.status == "pending" and item.diagnoses[0].kind == "divergence"
        assert commands(run_dir) == [] and run.lr == BUG_LR
        approval = queue.approve(item.id)
        run.train(1)
    [command] = approval.commands
    # the person ordered it; the idea (and the id) stays the rules'
    assert (command.source, command.proposed_by) == ("human", "rules")
    assert (command.id, command.proposal_id) == (f"rules-{item.id}-0", item.id)
    assert applied(run_dir, command.id)[0].after == pytest.approx(0.05)
    assert queue.get(item.id).status == "applied"


def test_an_unedited_approval_is_measured_as_the_autopilots_change(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    queue = ReviewQueue(run_dir, settings)
    with Autopilot(run_dir, mode="suggest", settings=settings) as pilot:
        record = diverge(run, pilot)
        [command] = queue.approve(record.id).commands
        run.train(1)
        [row] = applied(run_dir, command.id)
        assert (row.decision, row.source, row.proposed_by) == ("applied", "human", "rules")
        state = pilot.tick()
        assert [b["command_id"] for b in state["baselines"]] == [command.id]
        assert state["baselines"][0]["proposed_by"] == "rules"
        [effect] = run.until(lambda: effects(run_dir), pilot)
    assert (effect.decision_id, effect.command_id) == (record.id, command.id)
    assert effect.verdict == "better"


def test_off_records_the_diagnosis_and_proposes_nothing(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="off", settings=settings) as pilot:
        record = diverge(run, pilot)
    assert record.diagnoses[0].kind == "divergence" and record.route == "none"
    assert (record.proposal, record.proposer, record.verdicts) == (None, None, [])
    assert commands(run_dir) == [] and ReviewQueue(run_dir, settings).items() == []


# -- repeats and cooldowns --------------------------------------------------------------------
def test_a_lasting_divergence_is_decided_again_only_after_repeat_after_steps(
    make_kernel, run_dir, tmp_path
):
    settings = rule_settings(tmp_path, cadence={"repeat_after_steps": 100})
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        first = diverge(run, pilot)
        outcomes = []
        while run.step < first.step + 90:
            run.train(10)
            outcomes.append(pilot.tick()["outcome"])
        assert "cooldown" in outcomes and "diagnosed" not in outcomes
        assert [d.id for d in decisions(run_dir)] == [first.id]
        assert len(commands(run_dir)) == 1
        second = run.until(lambda: decisions(run_dir)[1:], pilot)[0]
    assert second.diagnoses[0].kind == "divergence"
    assert second.step - first.step >= 100


def test_a_repeated_decision_waits_for_the_knob_cooldown(make_kernel, run_dir, tmp_path):
    settings = rule_settings(
        tmp_path,
        cadence={"repeat_after_steps": 20},
        guards={"cooldown_steps": 200, "global_cooldown_steps": 10},
    )
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        diverge(run, pilot)
        second = run.until(lambda: decisions(run_dir)[1:], pilot)[0]
    # the run stays 5x worse: it is damaged by now, so a rewind goes with the lr cut
    [verdict] = [v for v in second.verdicts if v.knob == "lr"]
    assert verdict.status == "rejected" and "guards.cooldown_steps is 200" in verdict.reason
    assert [c.knob for c in commands(run_dir)] == ["lr"] + [None] * (len(second.command_ids))
    assert all(c.op == "rewind" for c in commands(run_dir)[1:])


# -- effects and rollbacks --------------------------------------------------------------------
def test_the_effect_is_measured_once_the_horizon_has_passed(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        record = diverge(run, pilot)
        run.train(1)
        [row] = applied(run_dir, record.command_ids[0])
        at = row.step or 0
        while run.step < at + 50 - 10:
            run.train(10, pilot)
        assert effects(run_dir) == []
        [effect] = run.until(lambda: effects(run_dir), pilot)
    assert (effect.decision_id, effect.command_id) == (record.id, row.command_id)
    assert (effect.applied_step, effect.horizon_steps) == (at, 50)
    assert effect.measured_at_step >= at + 50 and effect.key_metric == "val/loss"
    assert effect.verdict == "better" and not effect.rolled_back


def test_auto_rolls_back_a_change_that_made_the_run_worse(make_kernel, run_dir, settings):
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        [record] = run.until(lambda: decisions(run_dir), pilot)
        assert record.diagnoses[0].kind == "plateau" and run.lr == LR
        [effect] = run.until(lambda: effects(run_dir), pilot)
        run.train(1)
    assert effect.verdict == "worse" and effect.change_rel < -0.1 and effect.rolled_back
    change, rollback = commands(run_dir)
    assert rollback.id == effect.rollback_command_id == f"rollback-{change.id}"
    assert (rollback.knob, rollback.value, rollback.proposal_id) == ("lr", LR, record.id)
    assert applied(run_dir, rollback.id)[0].after == LR and run.lr == LR


def test_suggest_measures_a_harmful_change_but_never_rolls_it_back(make_kernel, run_dir, settings):
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    queue = ReviewQueue(run_dir, settings)
    with Autopilot(run_dir, mode="suggest", settings=settings) as pilot:
        [item] = run.until(queue.items, pilot)
        queue.approve(item.id)
        [effect] = run.until(lambda: effects(run_dir), pilot)
        run.train(20, pilot)
    assert (effect.decision_id, effect.verdict) == (item.id, "worse")
    assert not effect.rolled_back and effect.rollback_command_id is None
    assert [c.id for c in commands(run_dir)] == [f"rules-{item.id}-0"]
    assert run.lr == pytest.approx(LR / 2)


def test_a_rollback_never_undoes_a_later_change(make_kernel, run_dir, settings):
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        run.until(lambda: decisions(run_dir), pilot)
        run.train(10, pilot)
        person = Command(id="human-lr", source="human", knob="lr", value=0.03)
        append_command(run_dir, person)  # a person lowers lr further after the autopilot
        [effect] = run.until(lambda: effects(run_dir), pilot)
        run.train(20, pilot)
    assert effect.verdict == "worse" and not effect.rolled_back
    assert not [c for c in commands(run_dir) if c.id.startswith("rollback-")]
    assert run.lr == 0.03


# -- restarts, the lock, freeze -----------------------------------------------------------------
def test_a_restarted_autopilot_continues_from_its_checkpoint(make_kernel, run_dir, tmp_path):
    settings = rule_settings(tmp_path, cadence={"repeat_after_steps": 100})
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        first = diverge(run, pilot)
        offset = pilot.tick()["metrics_offset"]
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        assert pilot.tick()["metrics_offset"] == offset  # nothing read twice
        run.train(50, pilot)  # the divergence goes on, inside its repeat window
        assert [d.id for d in decisions(run_dir)] == [first.id]
        second = run.until(lambda: decisions(run_dir)[1:], pilot)[0]
    assert second.step >= first.step + 100
    ids = [c.id for c in commands(run_dir)]
    assert len(ids) == len(set(ids)) == len(first.command_ids) + len(second.command_ids) >= 2


def test_a_tick_run_again_after_a_lost_checkpoint_does_not_act_twice(
    make_kernel, run_dir, settings, tmp_path
):
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
    run.set_lr(BUG_LR)
    run.train(20)
    checkpoints = run_dir / "autopilot" / "graph.sqlite"
    saved = shutil.copy(checkpoints, tmp_path / "graph.sqlite.before")
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        assert pilot.tick()["outcome"] == "diagnosed"
    [record] = decisions(run_dir)
    shutil.copy(saved, checkpoints)  # a power cut lost the checkpoint of that tick
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        again = pilot.tick()
    assert (again["outcome"], again["last_decision_id"]) == ("diagnosed", record.id)
    assert [d.id for d in decisions(run_dir)] == [record.id]
    assert [c.id for c in commands(run_dir)] == record.command_ids


def test_a_second_autopilot_on_the_same_run_is_refused(run_dir, settings):
    with (
        Autopilot(run_dir, mode="auto", settings=settings),
        pytest.raises(AutopilotError, match="another autopilot is watching"),
    ):
        Autopilot(run_dir, mode="suggest", settings=settings)
    Autopilot(run_dir, mode="suggest", settings=settings).close()  # free again once closed


@pytest.mark.parametrize("mode", ["auto", "suggest"])
def test_a_frozen_run_gets_every_verdict_rejected(mode, make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    write_freeze(run_dir, "prod")
    run.train(1)
    state = read_kernel_state(run_dir)
    assert state is not None and state.freeze == "prod"  # the kernel picked it up
    with Autopilot(run_dir, mode=mode, settings=settings) as pilot:
        record = diverge(run, pilot)
    assert record.verdicts and record.route == "none"
    assert all(v.status == "rejected" and "frozen" in v.reason for v in record.verdicts)
    assert commands(run_dir) == [] and ReviewQueue(run_dir, settings).items() == []


def test_run_returns_once_the_ended_training_is_read(make_kernel, run_dir, tmp_path):
    settings = rule_settings(tmp_path, cadence={"poll_interval_s": 0.01})
    run = Training(make_kernel, diverges_above_0_2)
    run.train(BUG_STEP)
    run.set_lr(BUG_LR)
    run.train(30)
    run.kernel.close()
    ticks: list[dict[str, Any]] = []
    safety_net = threading.Event()  # only against a hung test
    timer = threading.Timer(60, safety_net.set)
    timer.start()
    with Autopilot(run_dir, mode="off", settings=settings) as pilot:
        pilot.run(stop=safety_net, on_tick=ticks.append)
    timer.cancel()
    assert not safety_net.is_set() and ticks[-1]["step"] == run.step
    assert [d.diagnoses[0].kind for d in decisions(run_dir)] == ["divergence"]
