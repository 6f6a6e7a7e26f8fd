"""The run-directory lifecycle: a kernel on a directory whose run has ended starts a new
segment, and nothing queued for the earlier run is applied."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _published import TRAIN_LOOP, knob_value, published, sgd

from kernel import MetricRecord, read_ledger
from kernel.jsonl import read_json, write_json_atomic


def _rows(run_dir) -> list[tuple[str | None, str, int | None]]:
    return [(r.command_id, r.decision, r.segment) for r in read_ledger(run_dir)]


def test_a_script_run_again_applies_nothing_queued_after_the_first_run(run_dir, send):
    run_dir.mkdir()
    subprocess.run([sys.executable, str(TRAIN_LOOP), str(run_dir), "5"], check=True, timeout=120)
    for n, (knob, value) in enumerate([("lr", 0.02), ("lr", 0.5), ("weight_decay", 0.1)]):
        send(id=f"late{n}", knob=knob, value=value, reason="lr 0.001 looks low")
    send(id="late3", knob="lr", multiplier=20.0, apply_at_step=1)
    subprocess.run([sys.executable, str(TRAIN_LOOP), str(run_dir), "5"], check=True, timeout=120)

    ledger = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in ledger] == [
        (f"late{n}", "expired") for n in range(4)
    ]
    assert all(r.segment == 1 and r.step is None for r in ledger)
    assert "nothing queued for an earlier run is applied" in (ledger[0].reason or "")
    state = published(run_dir)
    assert (state.segment, knob_value(state, "lr"), knob_value(state, "weight_decay")) == (
        1,
        0.1,
        0.0,
    )


def test_a_command_for_the_next_run_is_applied_by_it(make_kernel, send, run_dir):
    make_kernel(optimizer=sgd()).close()
    send(id="stale", knob="lr", value=0.5)
    send(id="next", knob="lr", value=0.05, segment=1)
    opt = sgd()
    kernel = make_kernel(optimizer=opt)
    assert kernel.segment == 1 and published(run_dir).segment == 1
    assert _rows(run_dir) == [("stale", "expired", 1)]
    kernel.step(0)
    assert _rows(run_dir) == [("stale", "expired", 1), ("next", "applied", 1)]
    assert opt.param_groups[0]["lr"] == 0.05


def test_pending_commands_of_an_ended_run_expire_unless_meant_for_the_next(
    make_kernel, send, run_dir
):
    first = make_kernel(optimizer=sgd())
    send(id="old", knob="lr", value=0.03, apply_at_step=10)
    first.step(0)
    first.close()
    send(id="later", knob="lr", value=0.04, apply_at_step=3, segment=1)
    opt = sgd()
    second = make_kernel(optimizer=opt)
    for step in range(5):
        second.step(step)
    assert _rows(run_dir) == [("old", "expired", 1), ("later", "applied", 1)]
    assert read_ledger(run_dir)[1].step == 3 and opt.param_groups[0]["lr"] == 0.04


def test_a_crashed_run_ends_its_segment(make_kernel, send, run_dir):
    with pytest.raises(RuntimeError), make_kernel(optimizer=sgd()):
        raise RuntimeError("boom")
    send(id="stale", knob="lr", value=0.5)
    assert make_kernel(optimizer=sgd()).segment == 1
    assert _rows(run_dir) == [("stale", "expired", 1)]


def test_a_run_whose_process_died_ends_its_segment(make_kernel, send, run_dir):
    make_kernel(optimizer=sgd()).step(0)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    state = read_json(run_dir / "kernel.json")  # still "running": the process was killed
    assert state is not None
    write_json_atomic(run_dir / "kernel.json", {**state, "pid": int(dead.stdout)})
    send(id="stale", knob="lr", value=0.5)
    kernel = make_kernel(optimizer=sgd())
    assert kernel.segment == 1 and _rows(run_dir) == [("stale", "expired", 1)]


def test_a_run_with_a_stale_heartbeat_on_another_host_has_ended(make_kernel, run_dir):
    make_kernel(optimizer=sgd()).step(0)
    state = published(run_dir)
    assert not state.has_ended()
    moved = state.model_copy(update={"host": "elsewhere", "pid": 1})
    assert not moved.has_ended()
    assert moved.has_ended(now=state.heartbeat + 301)


def test_a_live_command_for_another_segment_is_not_applied(make_kernel, send, run_dir):
    make_kernel(optimizer=sgd()).close()
    opt = sgd()
    kernel = make_kernel(optimizer=opt)
    send(id="old", knob="lr", value=0.5, segment=0)
    send(id="future", knob="lr", value=0.5, segment=2)
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in rows] == [
        ("old", "expired"),
        ("future", "rejected"),
    ]
    assert "segment 2, a later run" in (rows[1].reason or "")
    assert opt.param_groups[0]["lr"] == 0.1


def test_an_expired_id_may_be_sent_again_for_the_live_run(make_kernel, send, run_dir):
    make_kernel(optimizer=sgd()).close()
    send(id="again", knob="lr", value=0.5)
    kernel = make_kernel(optimizer=sgd())
    send(id="again", knob="lr", value=0.05)
    kernel.step(0)
    assert _rows(run_dir) == [("again", "expired", 1), ("again", "applied", 1)]


def test_metrics_of_a_later_segment_are_marked(make_kernel, run_dir):
    first = make_kernel(optimizer=sgd())
    first.log(5630, {"train/loss": 0.1})
    first.close()
    (run_dir / "metrics.jsonl").open("a").write('{"step":5631,"metr')  # torn by a crash
    second = make_kernel(optimizer=sgd())
    second.log(0, {"train/loss": 2.0})
    second.close()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert "segment" not in json.loads(lines[0])
    records = [
        MetricRecord.model_validate_json(lines[0]),
        MetricRecord.model_validate_json(lines[2]),
    ]
    assert [(r.step, r.segment) for r in records] == [(5630, 0), (0, 1)]
    state = published(run_dir)
    text = (run_dir / "metrics.jsonl").read_bytes()
    assert text[state.metrics_start :].startswith(b'{"step":0,')


def test_an_unreadable_kernel_json_starts_a_new_segment(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())
    send(id="done", knob="lr", value=0.05)
    first.step(0)
    first.close()
    send(id="stale", knob="lr", value=0.5)
    (run_dir / "kernel.json").write_text("{torn")
    opt = sgd()
    make_kernel(optimizer=opt).step(1)
    assert _rows(run_dir) == [("done", "applied", 0), ("stale", "expired", 1)]
    assert opt.param_groups[0]["lr"] == 0.1
