"""A knob never changes without its ledger row. A ledger append that fails at the OS (the
ledger pointed at ``/dev/full``, a file size limit) rolls the change back; the change is made,
once, when its row can be written, by the same kernel or by one restarted from a checkpoint
taken in between."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _published import knob_value, published, sgd

from kernel import read_ledger

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")


@contextmanager
def full_ledger(run_dir: Path) -> Iterator[None]:
    """Every append to the run's ledger fails with ENOSPC, as on a full disk."""
    ledger = run_dir / "applied.jsonl"
    saved = ledger.read_bytes() if ledger.exists() else None
    ledger.unlink(missing_ok=True)
    ledger.symlink_to(FULL)
    try:
        yield
    finally:
        ledger.unlink()
        if saved is not None:
            ledger.write_bytes(saved)


def _applied(run_dir: Path) -> list[tuple[str | None, int | None, object, object]]:
    rows = read_ledger(run_dir)
    return [(r.command_id, r.step, r.before, r.after) for r in rows if r.decision == "applied"]


@needs_dev_full
def test_a_change_whose_row_cannot_be_written_is_rolled_back_then_made_once(
    make_kernel, send, run_dir
):
    opt = sgd()
    kernel = make_kernel(optimizer=opt)
    kernel.step(0)
    send(id="halve", knob="lr", multiplier=0.5)
    with full_ledger(run_dir):
        kernel.step(1)
        kernel.step(2)
        assert opt.param_groups[0]["lr"] == 0.1  # no row, no change
        assert knob_value(published(run_dir), "lr") == 0.1
    assert read_ledger(run_dir) == []
    kernel.step(3)  # the disk has room again
    kernel.step(4)
    assert opt.param_groups[0]["lr"] == 0.05
    assert _applied(run_dir) == [("halve", 3, 0.1, 0.05)]
    assert knob_value(published(run_dir), "lr") == 0.05


@needs_dev_full
def test_a_stop_whose_row_cannot_be_written_waits_for_its_row(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=sgd())
    send(id="halt", op="stop")
    with full_ledger(run_dir):
        kernel.step(0)
        assert not kernel.should_stop
    kernel.step(1)
    assert kernel.should_stop
    assert [(r.command_id, r.decision) for r in read_ledger(run_dir)] == [("halt", "applied")]


@needs_dev_full
def test_a_restart_from_a_checkpoint_taken_while_the_row_was_missing_applies_it_once(
    make_kernel, send, run_dir
):
    opt = sgd()
    first = make_kernel(optimizer=opt)
    first.step(0)
    send(id="halve", knob="lr", multiplier=0.5)
    with full_ledger(run_dir):
        first.step(1)
        checkpoint = copy.deepcopy(opt.state_dict())
    # the training process dies here; it restarts from the checkpoint
    restored = sgd()
    restored.load_state_dict(checkpoint)
    second = make_kernel(optimizer=restored)
    for step in range(2, 6):
        second.step(step)
    assert restored.param_groups[0]["lr"] == 0.05
    assert _applied(run_dir) == [("halve", 2, 0.1, 0.05)]


_AT_A_SIZE_LIMIT = """
import resource, signal, sys
from kernel.jsonl import append_line
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
path = sys.argv[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (60, 60))
append_line(path, '{"a": 1}')
try:
    append_line(path, '{"b": "' + "x" * 100 + '"}')  # 51 bytes fit: a short write
except OSError as exc:
    print("refused", exc.errno)
append_line(path, '{"c": 3}')
"""


def test_a_short_write_at_the_file_size_limit_leaves_no_fragment(tmp_path):
    path = tmp_path / "applied.jsonl"
    out = subprocess.run(
        [sys.executable, "-c", _AT_A_SIZE_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused")
    assert path.read_bytes() == b'{"a": 1}\n{"c": 3}\n'
