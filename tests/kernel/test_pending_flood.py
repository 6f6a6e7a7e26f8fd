"""A flood of commands for a far ``apply_at_step`` does not stall training: accepting one
costs the same with 100 or 1,000 waiting (counted in Python calls, never timed), at most
``max_pending`` may wait (the rest are rejected with the reason), and ``kernel.json``
publishes a bounded summary of them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from _published import published, sgd

from kernel import Command, read_ledger
from kernel._executor import PENDING_SHOWN, CommandExecutor
from kernel.knobs.optimizer import optimizer_knobs
from kernel.ledger import Ledger


def _line(i: int, at: int) -> str:
    cmd = Command(id=f"c{i}", source="human", knob="lr", value=0.05, apply_at_step=at)
    return cmd.model_dump_json(exclude_none=True)


def _executor(run_dir: Path, **kw: Any) -> CommandExecutor:
    run_dir.mkdir(parents=True, exist_ok=True)
    knobs = {k.name: k for k in optimizer_knobs(sgd())}
    return CommandExecutor(knobs, Ledger(run_dir), None, **kw)


def _calls(action: Callable[[], None]) -> int:
    """How many Python-level calls (and generator resumptions) ``action`` makes."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.settrace(tracer)  # type: ignore[arg-type]
    try:
        action()
    finally:
        sys.settrace(None)
    return count


def _cost_of_one_more(run_dir: Path, waiting: int) -> int:
    executor = _executor(run_dir, max_pending=10_000)
    for i in range(waiting):
        executor.accept(i * 1000, _line(i, 10**6 - i), step=0)  # each sorts first
    return _calls(lambda: executor.accept(10**9, _line(waiting, 10), step=0))


def test_accepting_a_pending_command_does_not_grow_with_those_waiting(tmp_path):
    few = _cost_of_one_more(tmp_path / "few", 100)
    many = _cost_of_one_more(tmp_path / "many", 1000)
    assert many <= few + 20, (few, many)


def test_due_commands_run_in_step_order_and_the_queue_is_summarised(tmp_path):
    executor = _executor(tmp_path / "run")
    for i, at in enumerate([30, 10, 20, 10]):
        executor.accept(i * 100, _line(i, at), step=0)
    assert executor.next_due_step() == 10
    summary = executor.pending_summary()
    assert summary["pending_count"] == 4 and summary["next_due_step"] == 10
    assert [p.command.id for p in summary["pending"]] == ["c1", "c3", "c2", "c0"]
    executor.apply_due(20)
    assert [r.command_id for r in read_ledger(tmp_path / "run")] == ["c1", "c3", "c2"]
    assert executor.next_due_step() == 30


def test_past_the_cap_a_pending_command_is_rejected_with_the_reason(tmp_path):
    executor = _executor(tmp_path / "run", max_pending=5)
    for i in range(8):
        executor.accept(i * 100, _line(i, 1000 + i), step=0)
    assert executor.pending_summary()["pending_count"] == 5
    rows = read_ledger(tmp_path / "run")
    assert [(r.command_id, r.decision) for r in rows] == [(f"c{i}", "rejected") for i in (5, 6, 7)]
    assert all("at most 5 commands may wait" in (r.reason or "") for r in rows)
    executor.apply_due(2000)
    applied = [r.command_id for r in read_ledger(tmp_path / "run") if r.decision == "applied"]
    assert applied == [f"c{i}" for i in range(5)]


def test_a_pending_id_sent_again_is_a_duplicate(tmp_path):
    executor = _executor(tmp_path / "run")
    executor.accept(0, _line(0, 100), step=0)
    executor.accept(100, _line(0, 200), step=0)
    rows = read_ledger(tmp_path / "run")
    assert [(r.command_id, r.decision) for r in rows] == [("c0", "rejected")]
    assert "duplicate command id" in (rows[0].reason or "")


def test_kernel_json_stays_small_with_many_waiting(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    for i in range(30):
        send(id=f"w{i}", knob="lr", value=0.05, apply_at_step=1000 + i)
    kernel.step(0)
    few = (run_dir / "kernel.json").stat().st_size
    for i in range(30, 600):
        send(id=f"w{i}", knob="lr", value=0.05, apply_at_step=1000 + i)
    kernel.step(1)
    state = published(run_dir)
    assert state.pending_count == 600 and state.next_due_step == 1000
    assert [p.command.id for p in state.pending] == [f"w{i}" for i in range(PENDING_SHOWN)]
    assert (run_dir / "kernel.json").stat().st_size < few + 100


def test_every_pending_command_survives_a_rebuilt_kernel(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())  # never closed: the run stays live
    for i in range(3 * PENDING_SHOWN):
        send(id=f"w{i}", knob="lr", value=0.05, apply_at_step=100 + i)
    first.step(0)
    assert len(published(run_dir).pending) == PENDING_SHOWN
    second = make_kernel(optimizer=sgd())
    second.step(1)
    assert published(run_dir).pending_count == 3 * PENDING_SHOWN
    second.step(10**6)
    applied = [r.command_id for r in read_ledger(run_dir) if r.decision == "applied"]
    assert applied == [f"w{i}" for i in range(3 * PENDING_SHOWN)]
