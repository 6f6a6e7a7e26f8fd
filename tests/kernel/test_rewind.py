"""The ``rewind`` op: a command restores a kept snapshot at the next step, exactly, with a
ledger row; without a snapshot it is rejected and training goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _snapshot_run import Run

from kernel import (
    Command,
    CommandError,
    append_command,
    parse_command_line,
    read_kernel_state,
    read_ledger,
    write_freeze,
)


@pytest.fixture
def run(tmp_path: Path):
    r = Run(tmp_path / "run", snapshot_every_steps=5, snapshot_keep=3, snapshot_on_best=False)
    yield r
    r.close()


def _rewind(run: Run, **fields: Any) -> None:
    append_command(run.kernel.run_dir, Command(id="r1", source="human", op="rewind", **fields))


def _row(run: Run, cid: str = "r1"):
    return next(r for r in read_ledger(run.kernel.run_dir) if r.command_id == cid)


def test_a_rewind_command_restores_the_snapshot_exactly(run: Run) -> None:
    run.train(12)  # snapshots at 0, 5, 10
    snapshot = run.kernel.snapshots[-1]
    run.train(3)
    run.weights["aux"] = 3.0
    _rewind(run)
    run.train(1)  # read and applied at step 15, after that step's update
    params = list(run.model.parameters())
    assert len(params) == len(snapshot.parameters) == 6
    assert all(torch.equal(p, s) for p, s in zip(params, snapshot.parameters, strict=True))
    buffers = list(run.model.buffers())
    assert all(torch.equal(b, s) for b, s in zip(buffers, snapshot.buffers, strict=True))
    state = run.opt.state_dict()
    assert snapshot.optimizer is not None
    for i, entry in snapshot.optimizer["state"].items():
        assert all(torch.equal(state["state"][i][k], v) for k, v in entry.items())
    assert state["param_groups"] == snapshot.optimizer["param_groups"]
    assert run.sched.state_dict() == snapshot.schedulers[0]
    assert run.opt.param_groups[0]["lr"] == snapshot.knob_values["lr"] == 0.01 * 0.5**2
    assert run.weights["aux"] == 0.5
    assert {n: k.get() for n, k in run.kernel.knobs.items()} == snapshot.knob_values
    assert run.kernel.last_step == 15  # the loop's step counter goes on


def test_the_rewind_row_says_from_which_step_to_which_and_what(run: Run) -> None:
    run.train(8)
    _rewind(run, reason="loss spike")
    run.train(1)
    row = _row(run)
    assert (row.decision, row.op, row.intent, row.step, row.snapshot_step) == (
        "applied",
        "rewind",
        "rewind",
        8,
        5,
    )
    assert row.restored == ["parameters", "buffers", "optimizer", "scheduler", "knobs", "rng"]
    assert row.reason == "loss spike"
    assert row.knob_changes is not None and "lr" in row.knob_changes  # the schedule moved it


def test_kernel_json_lists_the_snapshots(run: Run) -> None:
    run.train(11)
    run.kernel.close()
    state = read_kernel_state(run.kernel.run_dir)
    assert state is not None
    assert [(s.step, s.kind) for s in state.snapshots] == [
        (0, "cadence"),
        (5, "cadence"),
        (10, "cadence"),
    ]
    raw = json.loads((run.kernel.run_dir / "kernel.json").read_text())
    assert raw["snapshots"][0]["step"] == 0


def test_no_snapshot_is_rejected_and_training_goes_on(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=0)
    r.train(2)
    _rewind(r)
    r.train(3)
    row = _row(r)
    assert row.decision == "rejected" and "snapshots are off" in (row.reason or "")
    assert r.kernel.last_step == 4
    r.close()


@pytest.mark.parametrize(
    ("fields", "snapshot_step"),
    [
        ({}, 20),
        ({"back": 2}, 15),
        ({"to": "step", "to_step": 17}, 15),
        ({"to": "step", "to_step": 10}, 10),
    ],
)
def test_which_snapshot(run: Run, fields: dict[str, object], snapshot_step: int) -> None:
    run.train(22)  # kept: 10, 15, 20
    _rewind(run, **fields)
    run.train(1)
    assert _row(run).snapshot_step == snapshot_step


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"back": 4}, "back 4 is past the 3 snapshot(s) kept: step 10, step 15, step 20"),
        ({"to": "step", "to_step": 3}, "no snapshot is kept from step 3 or earlier"),
        ({"to": "best"}, "no snapshot has a best value of the key metric"),
    ],
)
def test_a_rewind_that_finds_no_snapshot_is_rejected(
    tmp_path: Path, fields: dict[str, object], reason: str
) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=5, snapshot_on_best=False)
    r.kernel._rewinder.ring.mode = None  # as without a key metric: no snapshot is best
    r.train(22)
    _rewind(r, **fields)
    r.train(1)
    row = _row(r)
    assert row.decision == "rejected" and reason in (row.reason or ""), row.reason
    r.close()


def test_to_best_picks_the_best_snapshot(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=5, snapshot_best_every_steps=1)
    for loss in [5.0, 4.0, 0.5, 3.0, 2.0, 2.5, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7]:
        r.train(1, {"train/loss": loss})
    _rewind(r, to="best")
    r.train(1, {"train/loss": 1.0})
    assert _row(r).snapshot_step == 2
    r.close()


def test_a_frozen_run_ignores_a_rewind(run: Run) -> None:
    run.train(6)
    write_freeze(run.kernel.run_dir, "prod")
    _rewind(run)
    run.train(2)
    assert _row(run).decision == "ignored_freeze"


def test_training_goes_on_after_a_rewind(run: Run) -> None:
    run.train(7)
    _rewind(run)
    run.train(10)
    assert _row(run).decision == "applied"
    assert run.kernel.last_step == 16
    assert [s.step for s in run.kernel.snapshots] == [5, 10, 15]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"op": "rewind", "to": "step"}, "names it in to_step"),
        ({"op": "rewind", "to_step": 3}, "names it in to_step"),
        ({"op": "rewind", "to": "best", "back": 2}, "back counts snapshots"),
        ({"op": "stop", "to": "last"}, "op 'stop' takes no to"),
        ({"op": "rewind", "back": 0}, "back"),
        ({"op": "rewind", "to": "first"}, "to"),
    ],
)
def test_bad_rewind_commands_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command_line(json.dumps({"id": "c", "source": "human", **fields}))


def test_a_rewind_has_the_rewind_intent_and_a_short_form() -> None:
    cmd = parse_command_line('{"id": "c", "source": "rules", "op": "rewind", "to": "best"}')
    assert cmd.intent == "rewind" and cmd.describe() == "rewind to best"
    cmd = Command(id="c", source="human", op="rewind", to="step", to_step=40)
    assert cmd.describe() == "rewind to step 40"
    assert (
        Command(id="c", source="human", op="rewind", back=3).describe() == "rewind back 3 snapshots"
    )
