"""A command is applied at most once, across clean restarts, crashes, and the window between
writing a ledger row and writing ``kernel.json``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
from _published import TRAIN_LOOP, knob_value, published, sgd

from kernel import read_ledger
from kernel.jsonl import read_json, write_json_atomic


def _applied_ids(run_dir) -> list[str | None]:
    return [r.command_id for r in read_ledger(run_dir) if r.decision == "applied"]


# -- in process ----------------------------------------------------------------------


def test_a_restarted_kernel_applies_nothing_old(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="old1", knob="lr", value=0.05)
    send(id="old2", op="checkpoint")  # rejected: no save_fn
    for step in range(3):
        first.step(step)
    first.close()
    assert len(read_ledger(run_dir)) == 2

    opt = sgd()
    second = make_kernel(optimizer=opt)
    for step in range(3, 6):
        second.step(step)
    assert len(read_ledger(run_dir)) == 2
    assert opt.param_groups[0]["lr"] == 0.1  # the checkpoint, not the kernel, restores values
    send(id="new", knob="lr", value=0.07)
    for step in range(6, 9):
        second.step(step)
    assert _applied_ids(run_dir) == ["old1", "new"]
    assert opt.param_groups[0]["lr"] == 0.07


def test_a_pending_command_survives_a_kernel_rebuilt_in_the_live_run(make_kernel, send, run_dir):
    make_kernel(optimizer=sgd())  # never closed: the run is live, in this process
    send(id="future", knob="lr", value=0.03, apply_at_step=10)
    first = make_kernel(optimizer=sgd())
    first.step(0)
    assert [p.command.id for p in published(run_dir).pending] == ["future"]

    opt = sgd()
    second = make_kernel(optimizer=opt)
    for step in range(1, 15):
        second.step(step)
    assert [(r.command_id, r.step, r.segment) for r in read_ledger(run_dir)] == [("future", 10, 0)]
    assert opt.param_groups[0]["lr"] == 0.03
    second.close()

    third = make_kernel(optimizer=sgd())
    for step in range(15, 20):
        third.step(step)
    assert len(read_ledger(run_dir)) == 1
    assert published(run_dir).pending == []


def test_a_resent_id_is_a_duplicate_after_a_restart(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="once", knob="lr", value=0.05)
    first.step(0)
    first.close()
    second = make_kernel(optimizer=sgd())
    send(id="once", knob="lr", value=0.01)
    second.step(1)
    assert [r.decision for r in read_ledger(run_dir)] == ["applied", "rejected"]


# -- the crash window ----------------------------------------------------------------


def test_a_stale_cursor_does_not_reapply_ledgered_commands(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="a", knob="lr", value=0.05)
    send(id="b", knob="lr", value=0.01, apply_at_step=2)
    send(id="bad", knob="nope", value=1.0)
    for step in range(3):
        first.step(step)
    first.close()
    state = read_json(run_dir / "kernel.json")
    assert state is not None
    # the kernel died after its ledger rows but before kernel.json caught up
    write_json_atomic(run_dir / "kernel.json", {**state, "cursor": 0, "pending": []})

    opt = sgd()
    second = make_kernel(optimizer=opt)
    for step in range(3, 6):
        second.step(step)
    assert [r.command_id for r in read_ledger(run_dir)] == ["a", "bad", "b"]
    assert opt.param_groups[0]["lr"] == 0.1
    assert published(run_dir).cursor == (run_dir / "commands.jsonl").stat().st_size


def test_a_stale_pending_list_does_not_reapply_a_command(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="future", knob="lr", value=0.03, apply_at_step=2)
    first.step(0)
    stale = read_json(run_dir / "kernel.json")  # still lists 'future' as pending
    first.step(2)
    first.close()
    write_json_atomic(run_dir / "kernel.json", stale)

    opt = sgd()
    second = make_kernel(optimizer=opt)
    for step in range(3, 6):
        second.step(step)
    assert _applied_ids(run_dir) == ["future"]
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_corrupt_kernel_json_falls_back_to_the_ledger(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="a", knob="lr", value=0.05)
    first.step(0)
    first.close()
    (run_dir / "kernel.json").write_text("{torn")
    second = make_kernel(optimizer=sgd())
    second.step(1)
    assert _applied_ids(run_dir) == ["a"]
    assert published(run_dir).status == "running"


def test_a_command_whose_reason_holds_a_line_separator_is_not_reapplied(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="a", knob="lr", multiplier=0.5, reason="halve\u2028now")
    first.step(0)
    first.close()
    state = read_json(run_dir / "kernel.json")
    assert state is not None
    write_json_atomic(run_dir / "kernel.json", {**state, "cursor": 0})
    opt = sgd()
    opt.param_groups[0]["lr"] = 0.05  # restored from a checkpoint
    second = make_kernel(optimizer=opt)
    second.step(1)
    assert opt.param_groups[0]["lr"] == 0.05


# -- a real crash --------------------------------------------------------------------


def _start(run_dir: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_LOOP), str(run_dir), str(steps)])


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return torch.load(run_dir / "ckpt.pt")["step"]
    except FileNotFoundError:
        return -1


def test_a_killed_training_process_applies_nothing_twice(run_dir, send, wait_for):
    run_dir.mkdir()
    proc = _start(run_dir, 0)
    try:
        wait_for(lambda: _checkpoint_step(run_dir) >= 0, what="the first training step")
        send(id="c1", knob="lr", value=0.05)
        send(id="c2", knob="lr", multiplier=0.5)
        send(id="c3", knob="weight_decay", value=0.01)
        rows = wait_for(
            lambda: len(_applied_ids(run_dir)) == 3 and read_ledger(run_dir),
            what="three applied commands",
        )
        last = max(r.step for r in rows)
        wait_for(lambda: _checkpoint_step(run_dir) > last, what="a checkpoint after them")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(run_dir)

    send(id="stale", knob="lr", multiplier=10.0)  # sent while training is down
    send(id="c4", knob="lr", multiplier=2.0, segment=1)  # meant for the restarted run
    subprocess.run([sys.executable, str(TRAIN_LOOP), str(run_dir), "20"], check=True, timeout=120)

    applied = _applied_ids(run_dir)
    assert Counter(applied) == {"c1": 1, "c2": 1, "c3": 1, "c4": 1}
    expired = [r.command_id for r in read_ledger(run_dir) if r.decision == "expired"]
    assert expired == ["stale"]
    state = published(run_dir)
    assert knob_value(state, "lr") == 0.05  # 0.05, x0.5, then x2 once
    assert knob_value(state, "weight_decay") == 0.01
    assert (state.status, state.last_step, state.segment) == ("closed", killed_at + 20, 1)
