"""Freeze modes and recipes: a frozen run ignores knob changes; a recipe replays a run's knob
history step by step."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from kernel import (
    RunDirError,
    export_recipe,
    load_recipe,
    read_freeze,
    read_kernel_state,
    read_ledger,
    write_freeze,
    write_recipe,
)
from kernel.freeze import RECIPE_LIMIT, RecipeEntry


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)


# -- freeze prod ---------------------------------------------------------------------


def test_freeze_prod_ignores_knob_changes_but_not_operations(make_kernel, send, run_dir):
    run_dir.mkdir()
    write_freeze(run_dir, "prod")
    saved: list[int] = []
    opt = _sgd()
    kernel = make_kernel(optimizer=opt, save_fn=saved.append)
    send(id="set", knob="lr", value=0.05)
    send(id="ckpt", op="checkpoint")
    send(id="stop", op="stop")
    kernel.step(4)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in rows] == [
        ("set", "ignored_freeze"),
        ("ckpt", "applied"),
        ("stop", "applied"),
    ]
    reason = rows[0].reason or ""
    assert "frozen (prod)" in reason and "freeze off" in reason
    assert opt.param_groups[0]["lr"] == 0.1
    assert saved == [4] and kernel.should_stop
    state = read_kernel_state(run_dir)
    assert state is not None and state.freeze == "prod"


def test_freezing_a_running_kernel_takes_effect_with_the_next_command(make_kernel, send, run_dir):
    opt = _sgd()
    kernel = make_kernel(optimizer=opt)
    kernel.step(0)
    write_freeze(run_dir, "prod")
    send(knob="lr", value=0.05)
    kernel.step(1)
    write_freeze(run_dir, "off")
    send(knob="lr", value=0.07)
    kernel.step(2)
    assert [r.decision for r in read_ledger(run_dir)] == ["ignored_freeze", "applied"]
    assert opt.param_groups[0]["lr"] == 0.07


def test_a_frozen_future_command_is_ignored_when_due(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(knob="lr", value=0.05, apply_at_step=3)
    kernel.step(0)
    write_freeze(run_dir, "prod")
    kernel.step(1)
    kernel.step(3)
    assert [r.decision for r in read_ledger(run_dir)] == ["ignored_freeze"]


# -- freeze files --------------------------------------------------------------------


def test_read_freeze_defaults_to_off(run_dir):
    assert read_freeze(run_dir).mode == "off"


def test_freeze_replay_needs_an_existing_recipe(run_dir, tmp_path):
    run_dir.mkdir()
    with pytest.raises(RunDirError, match="needs a recipe"):
        write_freeze(run_dir, "replay")
    with pytest.raises(RunDirError, match="cannot read recipe"):
        write_freeze(run_dir, "replay", tmp_path / "missing.jsonl")
    assert not (run_dir / "freeze.json").exists()


def test_a_malformed_recipe_is_refused_naming_its_line(run_dir, tmp_path):
    run_dir.mkdir()
    recipe = tmp_path / "recipe.jsonl"
    recipe.write_text('{"step": 1, "knob": "lr", "value": 0.1}\n{"step": -1}\n')
    with pytest.raises(RunDirError, match=r"recipe.jsonl:2"):
        write_freeze(run_dir, "replay", recipe)


def test_a_recipe_only_goes_with_replay(run_dir, tmp_path):
    run_dir.mkdir()
    recipe = tmp_path / "recipe.jsonl"
    write_recipe([], recipe)
    with pytest.raises(RunDirError, match="only makes sense with freeze replay"):
        write_freeze(run_dir, "prod", recipe)


def test_an_unreadable_freeze_file_raises_run_dir_error(run_dir):
    run_dir.mkdir()
    (run_dir / "freeze.json").write_text('{"mode": "melt"}')
    with pytest.raises(RunDirError, match="freeze off"):
        read_freeze(run_dir)


def test_a_run_can_be_frozen_before_its_directory_exists(run_dir):
    write_freeze(run_dir, "prod")
    assert read_freeze(run_dir).mode == "prod"


def test_recipes_round_trip_sorted_by_step(tmp_path):
    entries = [
        RecipeEntry(step=5, knob="lr", value=0.1),
        RecipeEntry(step=2, knob="x", value=True),
        RecipeEntry(step=5, knob="lr", value=[0.1, 0.2], command_id="c", source="ai"),
    ]
    write_recipe(entries, tmp_path / "r.jsonl")
    assert load_recipe(tmp_path / "r.jsonl") == [entries[1], entries[0], entries[2]]


def test_a_recipe_keeps_ids_with_unicode_line_separators(tmp_path):
    entries = [RecipeEntry(step=1, knob="lr", value=0.1, command_id="from\u2028chat")]
    write_recipe(entries, tmp_path / "r.jsonl")
    assert load_recipe(tmp_path / "r.jsonl") == entries


# -- round trip ----------------------------------------------------------------------

STEPS = 60


def _train(run_dir, make_kernel, send, *, live: bool) -> list[tuple[float, ...]]:
    """60 steps of a tiny model; with ``live``, commands arrive ahead of time and mid-run."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    data = torch.randn(STEPS, 8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=15, gamma=0.5)
    weights = {"aux": 0.5}
    kernel = make_kernel(run_dir=run_dir, optimizer=opt, scheduler=sched, loss_weights=weights)
    if live:
        send(run_dir=run_dir, knob="lr", value=0.05, apply_at_step=10)
        send(run_dir=run_dir, knob="lr", multiplier=0.5, apply_at_step=20)
        send(run_dir=run_dir, knob="weight_decay", value=1e-3, apply_at_step=25)
        send(run_dir=run_dir, knob="loss.aux", value=0.1, apply_at_step=30)
        send(run_dir=run_dir, knob="lr", multiplier=3.0, apply_at_step=40)
        send(run_dir=run_dir, knob="lr", value=99.0, apply_at_step=41)  # rejected: not in recipe
    trace: list[tuple[float, ...]] = []
    for step in range(STEPS):
        loss = model(data[step]).pow(2).mean() + weights["aux"] * model.weight.abs().sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        if live and step == 33:
            send(run_dir=run_dir, knob="loss.aux", multiplier=2.0)
        kernel.step(step)
        group = opt.param_groups[0]
        trace.append((group["lr"], group["weight_decay"], weights["aux"], loss.item()))
    kernel.close()
    return trace


def test_a_recipe_replays_a_run_step_by_step(tmp_path, make_kernel, send):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    trace_a = _train(run_a, make_kernel, send, live=True)
    recipe = export_recipe(run_a)
    assert [(e.step, e.knob) for e in recipe] == [
        (10, "lr"),
        (20, "lr"),
        (25, "weight_decay"),
        (30, "loss.aux"),
        (33, "loss.aux"),
        (40, "lr"),
    ]
    write_recipe(recipe, tmp_path / "recipe.jsonl")

    run_b.mkdir()
    write_freeze(run_b, "replay", tmp_path / "recipe.jsonl")
    send(run_dir=run_b, id="outsider", knob="lr", value=0.5)
    trace_b = _train(run_b, make_kernel, send, live=False)

    assert trace_b == trace_a
    rows = read_ledger(run_b)
    assert [(r.command_id, r.decision) for r in rows if r.source != "replay"] == [
        ("outsider", "ignored_freeze")
    ]
    replayed = [r for r in rows if r.source == "replay"]
    assert [(r.step, r.knob, r.after) for r in replayed] == [
        (e.step, e.knob, e.value) for e in recipe
    ]
    assert len({r.command_id for r in replayed}) == len(recipe)


def test_a_restarted_replay_does_not_replay_twice(tmp_path, make_kernel, run_dir):
    recipe = tmp_path / "recipe.jsonl"
    write_recipe(
        [RecipeEntry(step=2, knob="lr", value=0.05), RecipeEntry(step=5, knob="lr", value=0.02)],
        recipe,
    )
    run_dir.mkdir()
    write_freeze(run_dir, "replay", recipe)
    first = make_kernel(optimizer=_sgd())
    for step in range(4):
        first.step(step)
    first.close()
    opt = _sgd()
    opt.param_groups[0]["lr"] = 0.05  # restored from a checkpoint
    second = make_kernel(optimizer=opt)
    for step in range(4, 8):
        second.step(step)
    rows = read_ledger(run_dir)
    assert [(r.step, r.after) for r in rows] == [(2, 0.05), (5, 0.02)]
    assert opt.param_groups[0]["lr"] == 0.02


# -- hostile files: a run directory is not a trusted place ---------------------------


def _release(fifo: Path) -> None:
    """Unblock whoever hangs opening or reading ``fifo`` (so a failing test ends)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_as_the_replay_recipe_never_blocks_the_step(run_dir, tmp_path, make_kernel, caplog):
    run_dir.mkdir()
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    (run_dir / "freeze.json").write_text(json.dumps({"mode": "replay", "recipe": str(fifo)}))
    opt = _sgd()
    done = threading.Event()

    def train() -> None:
        kernel = make_kernel(optimizer=opt)
        kernel.step(0)
        kernel.step(1)
        done.set()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        assert done.wait(20), "kernel.step hung on a FIFO named as the recipe"
    finally:
        _release(fifo)
        thread.join(5)
    assert "must be a regular file, got a FIFO" in caplog.text
    state = read_kernel_state(run_dir)
    assert state is not None and state.last_step == 1
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_fifo_as_freeze_json_never_blocks_the_step(run_dir, make_kernel, caplog):
    run_dir.mkdir()
    fifo = run_dir / "freeze.json"
    os.mkfifo(fifo)
    done = threading.Event()

    def train() -> None:
        make_kernel(optimizer=_sgd()).step(0)
        done.set()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        assert done.wait(20), "kernel.step hung on a FIFO as freeze.json"
    finally:
        _release(fifo)
        thread.join(5)
    assert "must be a regular file, got a FIFO" in caplog.text
    with pytest.raises(RunDirError, match="must be a regular file, got a FIFO"):
        read_freeze(run_dir)


def test_the_cli_refuses_a_fifo_as_the_recipe(run_dir, tmp_path):
    run_dir.mkdir()
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    cli = [sys.executable, "-m", "autopilot", "--dir", str(run_dir), "freeze", "replay"]
    try:
        done = subprocess.run(
            [*cli, "--recipe", str(fifo)], capture_output=True, text=True, timeout=60
        )
    finally:
        _release(fifo)
    assert done.returncode != 0
    assert "must be a regular file, got a FIFO" in done.stderr
    assert not (run_dir / "freeze.json").exists()


def test_a_recipe_too_large_is_refused_unread(run_dir, tmp_path):
    run_dir.mkdir()
    recipe = tmp_path / "recipe.jsonl"
    with open(recipe, "wb") as f:
        f.truncate(RECIPE_LIMIT + 1)  # sparse: the limit is checked before reading
    with pytest.raises(RunDirError, match=f"must be at most {RECIPE_LIMIT} bytes"):
        write_freeze(run_dir, "replay", recipe)


def test_a_device_as_the_recipe_is_refused(run_dir):
    run_dir.mkdir()
    with pytest.raises(RunDirError, match="must be a regular file, got a character device"):
        write_freeze(run_dir, "replay", "/dev/zero")
