"""``commands.jsonl`` shrank or was replaced under a running kernel: it is read again from
its start, lines already answered are recognised (by their place and content, and by command
id), and every new line gets its row. Blank lines get a row too."""

from __future__ import annotations

from pathlib import Path

from _published import sgd

from kernel import read_ledger
from kernel.commands import COMMANDS_FILE


def _rows(run_dir: Path) -> list[tuple[str | None, str]]:
    return [(r.command_id, r.decision) for r in read_ledger(run_dir)]


def _send_lrs(send, prefix: str, n: int) -> None:
    for i in range(n):
        send(id=f"{prefix}{i}", knob="lr", value=0.01 + i / 1000, created_at=1.0)


def test_new_lines_after_a_truncation_are_all_answered(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    _send_lrs(send, "a", 10)
    kernel.step(0)
    (run_dir / COMMANDS_FILE).write_bytes(b"")  # truncated under the running kernel
    _send_lrs(send, "b", 10)  # the same byte offsets as the lines already handled
    kernel.step(1)
    assert _rows(run_dir) == [(f"{p}{i}", "applied") for p in "ab" for i in range(10)]


def test_fewer_new_lines_after_a_truncation_are_answered_too(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    _send_lrs(send, "a", 10)
    kernel.step(0)
    (run_dir / COMMANDS_FILE).write_bytes(b"")
    _send_lrs(send, "b", 2)
    kernel.step(1)
    assert _rows(run_dir)[10:] == [("b0", "applied"), ("b1", "applied")]


def test_a_handled_id_sent_again_after_a_truncation_is_a_duplicate(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    _send_lrs(send, "a", 3)
    kernel.step(0)
    (run_dir / COMMANDS_FILE).write_bytes(b"")
    send(id="a1", knob="lr", value=0.02)
    kernel.step(1)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in rows][3:] == [("a1", "rejected")]
    assert "duplicate command id 'a1'" in (rows[3].reason or "")


def test_the_kept_start_of_a_truncated_file_is_not_answered_twice(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    _send_lrs(send, "a", 4)
    kernel.step(0)
    path = run_dir / COMMANDS_FILE
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2]) + b"\n")  # the first two lines are kept
    _send_lrs(send, "b", 1)
    kernel.step(1)
    assert _rows(run_dir) == [*[(f"a{i}", "applied") for i in range(4)], ("b0", "applied")]


def test_a_truncation_while_the_kernel_was_rebuilt_loses_nothing(make_kernel, send, run_dir):
    first = make_kernel(optimizer=sgd())  # never closed: the run stays live
    _send_lrs(send, "a", 5)
    first.step(0)
    (run_dir / COMMANDS_FILE).write_bytes(b"")
    _send_lrs(send, "b", 2)
    second = make_kernel(optimizer=sgd())
    second.step(1)
    second.step(2)
    assert _rows(run_dir)[5:] == [("b0", "applied"), ("b1", "applied")]


def test_blank_lines_get_a_row(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / COMMANDS_FILE, "ab") as f:
        f.write(b"   \n\t\n\n \r\n")
    send(id="after", knob="lr", value=0.05)
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in rows] == [
        *[(None, "rejected")] * 4,
        ("after", "applied"),
    ]
    assert all("blank line" in (r.reason or "") for r in rows[:4])
    assert [r.offset for r in rows[:4]] == [0, 4, 6, 7]
    kernel.step(1)
    assert len(read_ledger(run_dir)) == 5
