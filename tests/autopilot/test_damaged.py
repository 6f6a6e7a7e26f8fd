"""A damaged network (its progress lost) is rewound, not cut further: the detector tells it
from overfitting, the guards check the rewind action, and a real run is rescued by it."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runs import mul, proposal, spec
from spiked_loop import SPIKE_STEP, SpikedLoop

from autopilot.config import Settings
from autopilot.detectors import default_detectors, diagnose
from autopilot.guards import GuardContext, check, commands_for
from autopilot.proposals import Action
from autopilot.summary import RunSummary, Windows, summarize
from autopilot.watch import Autopilot
from kernel import SnapshotInfo, read_ledger

STEPS = list(range(0, 1200, 20))


def _summary(windows: Windows, key: str = "val/loss") -> RunSummary:
    early = {name: values[:5] for name, (_, values) in windows.items()}
    return summarize(windows, {}, step=STEPS[-1], key_metric=key, key_mode="min", early=early)


def _falling(n: int, start: float = 2.3, end: float = 0.2) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)]


def test_a_dead_network_is_damaged_not_overfitting_nor_plateau() -> None:
    train = _falling(len(STEPS))
    val = _falling(len(STEPS), end=0.3)
    train[-6:] = val[-6:] = [2.31, 2.3, 2.3, 2.29, 2.3, 2.3]  # back at chance, both
    windows: Windows = {
        "train/loss": [list(map(float, STEPS)), train],
        "val/loss": [list(map(float, STEPS)), val],
    }
    found = diagnose(_summary(windows), windows, default_detectors(Settings().detectors))
    assert [d.kind for d in found] == ["divergence"]
    assert found[0].evidence["damaged"] is True and float(found[0].evidence["lost"] or 0) >= 0.9


def test_a_validation_loss_lost_while_train_holds_is_not_damage() -> None:
    train = _falling(len(STEPS), end=0.05)
    val = _falling(len(STEPS), end=0.4)
    val[-8:] = [1.9, 2.0, 2.1, 2.2, 2.2, 2.3, 2.3, 2.3]
    windows: Windows = {
        "train/loss": [list(map(float, STEPS)), train],
        "val/loss": [list(map(float, STEPS)), val],
    }
    found = diagnose(_summary(windows), windows, default_detectors(Settings().detectors))
    assert not any(d.evidence.get("damaged") for d in found)


def _guard_ctx(**kw) -> GuardContext:
    knobs = {"lr": spec("lr", 0.1, lo=1e-7, hi=10.0)}
    return GuardContext(step=1000, knobs=knobs, **kw)


SNAPSHOTS = (SnapshotInfo(step=800, wall_time=0.0, kind="cadence", metric=0.3, best=True),)


def test_a_rewind_action_needs_a_snapshot_and_comes_first() -> None:
    settings = Settings()
    none = check(proposal(Action.rewind("best")), _guard_ctx(), settings)[0]
    assert none.status == "rejected" and none.rule == "rewind"
    later = check(proposal(mul("lr", 0.5), Action.rewind("best")), _guard_ctx(), settings)[1]
    assert later.status == "rejected" and "first" in later.reason
    ok = check(
        proposal(Action.rewind("best"), mul("lr", 0.5)), _guard_ctx(snapshots=SNAPSHOTS), settings
    )
    assert [v.status for v in ok] == ["allowed", "allowed"]
    rewind, lr = commands_for(ok, source="rules", proposal_id="d-1", for_diagnosis="divergence")
    assert (rewind.op, rewind.to, rewind.intent, rewind.knob) == ("rewind", "best", "rewind", None)
    assert (lr.op, lr.knob, lr.multiplier) == ("set", "lr", 0.5)
    no_step = check(
        proposal(Action.rewind("step", to_step=100)), _guard_ctx(snapshots=SNAPSHOTS), settings
    )[0]
    assert no_step.status == "rejected" and "step 100" in no_step.reason


def test_a_rewind_waits_out_the_cooldown_after_the_last_one() -> None:
    ctx = _guard_ctx(snapshots=SNAPSHOTS, last_rewind_step=990)
    verdict = check(proposal(Action.rewind("last")), ctx, Settings())[0]
    assert verdict.status == "rejected" and verdict.rule == "cooldown"


def test_a_rewind_action_is_validated() -> None:
    with pytest.raises(ValueError, match="to_step"):
        Action.rewind("step")
    with pytest.raises(ValueError, match="rewind action"):
        Action(knob="lr", op="rewind", to="last")


def _tick(pilot: Autopilot) -> None:
    pilot.tick()


def test_with_the_reflex_off_the_rules_rewind_a_killed_network(tmp_path: Path) -> None:
    settings = Settings.model_validate({"budget": {"day_ledger": str(tmp_path / "day.jsonl")}})
    runs = {}
    for name, pilot_on in (("none", False), ("rules", True)):
        loop = SpikedLoop(
            tmp_path / name, reflex_action="off", flush_interval_s=0.0, heartbeat_interval_s=3600.0
        )
        if pilot_on:
            with Autopilot(tmp_path / name, mode="auto", settings=settings) as pilot:
                loop.train(300, on_step=lambda s: None if s % 10 else _tick(pilot))
        else:
            loop.train(300)
        runs[name] = loop.full_loss()
    rows = [r for r in read_ledger(tmp_path / "rules") if r.source == "rules"]
    rewind = next(r for r in rows if r.op == "rewind")
    assert rewind.decision == "applied" and (rewind.snapshot_step or 0) < SPIKE_STEP
    assert rewind.for_diagnosis == "divergence"
    cut = next(r for r in rows if r.knob == "lr")
    assert cut.step == rewind.step and cut.after == pytest.approx(0.005)  # restored, x0.5
    assert runs["none"] > 1.0 > 0.3 > runs["rules"]


def test_a_rewind_verdict_reads_as_a_rewind() -> None:
    from autopilot.cli.decisions import verdict_lines

    ok = check(proposal(Action.rewind("best")), _guard_ctx(snapshots=SNAPSHOTS), Settings())
    assert "rewind to best" in "\n".join(verdict_lines(ok)).split("allowed")[1]
