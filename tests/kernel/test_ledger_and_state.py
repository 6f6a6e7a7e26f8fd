"""The ledger (``applied.jsonl``) and ``kernel.json``: written by the kernel, read by everyone."""

from __future__ import annotations

import logging

import pytest

from kernel import KernelState, RunDirError, read_kernel_state, read_ledger
from kernel.knobs import KnobSpec
from kernel.ledger import Ledger
from kernel.state import write_kernel_state


def test_read_ledger_of_a_run_without_one_is_empty(run_dir):
    assert read_ledger(run_dir) == []


def test_rows_are_numbered_and_read_back(run_dir):
    run_dir.mkdir()
    ledger = Ledger(run_dir)
    ledger.record(
        step=3,
        decision="applied",
        command_id="a",
        source="human",
        op="set",
        knob="lr",
        before=0.1,
        after=0.05,
        offset=0,
    )
    ledger.record(step=4, decision="rejected", command_id="b", reason="no", offset=90)
    rows = read_ledger(run_dir)
    assert [(r.seq, r.step, r.decision, r.command_id) for r in rows] == [
        (1, 3, "applied", "a"),
        (2, 4, "rejected", "b"),
    ]
    assert (rows[0].before, rows[0].after) == (0.1, 0.05)


def test_a_reopened_ledger_remembers_what_it_answered(run_dir):
    run_dir.mkdir()
    first = Ledger(run_dir)
    first.record(step=0, decision="applied", command_id="a", offset=0)
    first.record(step=0, decision="rejected", command_id="b", offset=50)
    first.record(step=0, decision="failed", command_id="c", offset=100)
    again = Ledger(run_dir)
    assert again.handled_offsets == {0, 50, 100}
    assert again.handled_ids == {"a", "c"}  # a rejected id may be sent again, fixed
    assert again.record(step=1, decision="applied", command_id="d").seq == 4


def test_unreadable_ledger_lines_are_skipped_with_a_warning(run_dir, caplog):
    run_dir.mkdir()
    Ledger(run_dir).record(step=0, decision="applied", command_id="a")
    with (run_dir / "applied.jsonl").open("a") as f:
        f.write('{"not": "a row"}\n\n{"seq": 9, "step": 1, "wall_ti')  # junk, blank, torn
    with caplog.at_level(logging.WARNING):
        rows = read_ledger(run_dir)
    assert [r.command_id for r in rows] == ["a"]
    assert "unreadable line in" in caplog.text and "applied.jsonl" in caplog.text
    Ledger(run_dir).record(step=2, decision="applied", command_id="b")
    assert [r.command_id for r in read_ledger(run_dir)] == ["a", "b"]


def test_a_row_whose_text_holds_a_unicode_line_separator_reads_back(run_dir):
    run_dir.mkdir()
    ledger = Ledger(run_dir)
    ledger.record(step=0, decision="applied", command_id="a", reason="halve\u2028now")
    ledger.record(step=0, decision="applied", command_id="b", reason="x\x85y")
    assert [r.reason for r in read_ledger(run_dir)] == ["halve\u2028now", "x\x85y"]


# -- kernel.json ---------------------------------------------------------------------


def _state(**kw) -> KernelState:
    return KernelState(pid=1, host="h", started_at=10.0, heartbeat=12.0, **kw)


def test_kernel_state_round_trips(run_dir):
    run_dir.mkdir()
    spec = KnobSpec(name="lr", kind="float", lo=1e-7, hi=10.0, scale="log", value=0.1)
    write_kernel_state(run_dir, _state(last_step=5, cursor=77, knobs=[spec]))
    state = read_kernel_state(run_dir)
    assert state is not None
    assert (state.last_step, state.cursor, state.status) == (5, 77, "running")
    assert state.knob("lr") == spec
    assert state.knob("nope") is None
    assert state.heartbeat_age(now=15.0) == 3.0


def test_a_run_without_kernel_json_has_no_state(run_dir):
    assert read_kernel_state(run_dir) is None


@pytest.mark.parametrize("text", ["{not json", '{"pid": "x"}', "[]"])
def test_an_unreadable_kernel_json_raises_run_dir_error(run_dir, text):
    run_dir.mkdir()
    (run_dir / "kernel.json").write_text(text)
    with pytest.raises(RunDirError, match="kernel.json"):
        read_kernel_state(run_dir)
