"""The benchmark's task suite: consistent configurations, and short real trainings under the
kernel that are deterministic, take ``params``, tick ``on_tick`` and apply its commands."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evals.tasks import SETUPS, TASKS, Setup, TaskConfig, train_task
from kernel import Command, MetricRecord, append_command, new_command_id, read_ledger


def _metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [MetricRecord.model_validate_json(line) for line in lines]
    return {r.step: r.metrics for r in records}


def _sender(run_dir: Path, at: int, **fields: Any) -> Callable[[int], None]:
    """An ``on_tick`` that appends one command at tick ``at``."""

    def on_tick(step: int) -> None:
        if step == at:
            append_command(run_dir, Command(id=new_command_id("t"), source="rules", **fields))

    return on_tick


# -- the configurations ----------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_each_task_is_named_after_its_setup_and_starts_inside_its_space(name):
    task = TASKS[name]
    setup_name, config = name.split("/")
    assert SETUPS[setup_name] is task.setup and config and task.description
    assert set(task.start) == set(task.setup.space)
    for knob, value in task.start.items():
        lo, hi = task.setup.space[knob]
        assert lo <= value <= hi, f"{name}: {knob}={value} outside [{lo}, {hi}]"


@pytest.mark.parametrize("setup", SETUPS.values(), ids=lambda s: s.name)
def test_each_setup_has_a_small_grid_inside_its_space_and_one_good_task(setup):
    assert set(setup.grid) == set(setup.space)
    for knob, values in setup.grid.items():
        lo, hi = setup.space[knob]
        assert 0 < lo < hi and all(lo <= v <= hi for v in values)
    points = setup.grid_points()
    assert len(points) == math.prod(len(v) for v in setup.grid.values()) <= 12
    tasks = [t for t in TASKS.values() if t.setup is setup]
    [good] = [t for t in tasks if t.healthy]
    assert good.start in points  # the oracle's sweep trains the good configuration too
    assert len(tasks) >= 2


def test_a_setup_refuses_a_grid_outside_its_space():
    with pytest.raises(ValueError, match="outside"):
        Setup(
            name="s",
            dataset="digits",
            steps=20,
            eval_every=10,
            space={"lr": (1e-4, 1e-1)},
            grid={"lr": [1.0]},
        )
    with pytest.raises(ValueError, match="log-uniform"):
        Setup(
            name="s",
            dataset="digits",
            steps=20,
            eval_every=10,
            space={"lr": (0.0, 1e-1)},
            grid={"lr": [1e-2]},
        )


def test_a_task_refuses_a_start_outside_the_space_or_missing_a_knob():
    setup = SETUPS["digits"]
    with pytest.raises(ValueError, match="within"):
        TaskConfig(
            name="digits/x",
            setup=setup,
            description="",
            healthy=False,
            start={"lr": 5.0, "weight_decay": 1e-4},
        )
    with pytest.raises(ValueError, match="exactly the knobs"):
        TaskConfig(name="digits/x", setup=setup, description="", healthy=False, start={"lr": 1e-3})


# -- training ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_curve_and_the_run_files(tmp_path):
    task = TASKS["digits/good"]
    first = train_task(task, 3, tmp_path / "a", steps=40)
    second = train_task(task, 3, tmp_path / "b", steps=40)
    other = train_task(task, 4, tmp_path / "c", steps=40)
    assert first.steps == [20, 40] and first.values == second.values
    assert first.final == first.values[-1] and other.values != first.values
    metrics = _metrics(tmp_path / "a")
    assert sorted(metrics) == list(range(1, 41))
    assert {"train/loss", "lr", "grad/norm"} <= set(metrics[1])
    assert metrics[40]["val/loss"] == first.final and "val/acc" in metrics[40]
    assert (tmp_path / "a" / "kernel.json").exists()


@pytest.mark.parametrize("setup", SETUPS.values(), ids=lambda s: s.name)
def test_every_setup_trains_and_evaluates(setup, tmp_path):
    good = next(t for t in TASKS.values() if t.setup is setup and t.healthy)
    outcome = train_task(good, 0, tmp_path, steps=3)
    assert outcome.steps == [3] and math.isfinite(outcome.final) and outcome.wall_s > 0


def test_params_override_the_start_values(tmp_path):
    task = TASKS["digits/lr_high"]
    train_task(task, 0, tmp_path, params={"lr": 0.005}, steps=5)
    assert {m["lr"] for m in _metrics(tmp_path).values()} == {0.005}
    with pytest.raises(ValueError, match="no knob"):
        train_task(task, 0, tmp_path / "x", params={"momentum": 0.9}, steps=5)


def test_on_tick_runs_every_tick_and_its_command_applies_at_the_next_step(tmp_path):
    task = TASKS["digits/lr_high"]
    ticks: list[int] = []
    send = _sender(tmp_path, 10, knob="lr", value=0.002)

    def on_tick(step: int) -> None:
        ticks.append(step)
        send(step)

    train_task(task, 0, tmp_path, on_tick=on_tick, tick_every=5, steps=22)
    assert ticks == [5, 10, 15, 20]
    [row] = read_ledger(tmp_path)
    assert (row.step, row.knob, row.decision, row.before, row.after) == (
        11,
        "lr",
        "applied",
        0.1,
        0.002,
    )
    metrics = _metrics(tmp_path)  # applied at the end of step 11: step 12 trains with it
    assert [metrics[s]["lr"] for s in (10, 11, 12)] == [0.1, 0.1, 0.002]


def test_loss_weights_are_knobs_bounded_by_the_space(tmp_path):
    task = TASKS["digits_aux/loss_weights"]
    hi = task.setup.space["loss.aux"][1]
    send_ok = _sender(tmp_path, 10, knob="loss.aux", value=1.0)
    send_too_big = _sender(tmp_path, 20, knob="loss.aux", value=hi * 10)

    def on_tick(step: int) -> None:
        send_ok(step)
        send_too_big(step)

    train_task(task, 0, tmp_path, on_tick=on_tick, steps=25)
    applied, rejected = read_ledger(tmp_path)
    assert (applied.step, applied.decision, applied.after) == (11, "applied", 1.0)
    assert (rejected.step, rejected.decision) == (21, "rejected") and "within" in (
        rejected.reason or ""
    )


def test_a_stop_command_ends_the_run(tmp_path):
    outcome = train_task(
        TASKS["digits/good"], 0, tmp_path, steps=60, on_tick=_sender(tmp_path, 20, op="stop")
    )
    assert max(_metrics(tmp_path)) == 21 and outcome.steps == [20]
