"""The run-directory lifecycle on the command line: ``set`` refuses an ended run and
``set --next-run`` aims at the next one; ``reset`` clears what an ended run left queued."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _runs import mul, proposal, write_run

from autopilot._watch_lock import acquire
from autopilot.cli import main
from autopilot.config import Settings
from autopilot.guards import GuardContext, check
from autopilot.review import ReviewQueue
from kernel import Kernel, read_kernel_state, read_ledger
from kernel.state import write_kernel_state


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)


@pytest.fixture
def ended(tmp_path: Path) -> Path:
    """A run directory whose first run (segment 0) has closed."""
    run_dir = tmp_path / "run"
    Kernel(run_dir, optimizer=_sgd()).close()
    return run_dir


def _queued(run_dir: Path) -> list[dict]:
    path = run_dir / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_set_on_an_ended_run_is_refused_with_the_way_out(ended: Path, capsys) -> None:
    code, _, err = run(capsys, "--dir", ended, "set", "lr=0.02")
    assert code == 2 and "has ended (closed, segment 0)" in err
    assert "expired, never applied" in err and "set --next-run" in err and "reset" in err
    assert _queued(ended) == []


def test_set_next_run_is_applied_by_the_next_run(ended: Path, capsys) -> None:
    code, out, _ = run(capsys, "--dir", ended, "set", "lr=0.02", "--next-run")
    assert code == 0 and "for the next run" in out and "(segment 1)" in out
    assert _queued(ended)[0]["segment"] == 1
    opt = _sgd()
    with Kernel(ended, optimizer=opt) as kernel:
        kernel.step(0)
    assert opt.param_groups[0]["lr"] == 0.02
    assert [(r.decision, r.segment) for r in read_ledger(ended)] == [("applied", 1)]


def test_next_run_is_refused_on_a_live_run(tmp_path: Path, capsys) -> None:
    with Kernel(tmp_path / "run", optimizer=_sgd()) as kernel:
        code, _, err = run(capsys, "--dir", kernel.run_dir, "set", "lr=0.02", "--next-run")
    assert code == 2 and "is live" in err and "drop it to change this run" in err


def test_an_operation_on_an_ended_run_is_refused(ended: Path, capsys) -> None:
    code, _, err = run(capsys, "--dir", ended, "stop")
    assert code == 2 and "has ended" in err and "nothing to stop" in err


def test_a_run_whose_process_is_gone_counts_as_ended(ended: Path, capsys) -> None:
    state = read_kernel_state(ended)
    assert state is not None
    write_kernel_state(ended, state.model_copy(update={"status": "running", "pid": 2**22 + 7}))
    code, _, err = run(capsys, "--dir", ended, "set", "lr=0.02")
    assert code == 2 and "is gone" in err


def _queue_proposal(run_dir: Path) -> str:
    queue = ReviewQueue(run_dir, Settings())
    p = proposal(mul("lr", 0.5, reason="escape the plateau"))
    item = queue.new_item(
        step=10, proposal=p, verdicts=check(p, GuardContext.from_run(run_dir), queue.settings)
    )
    return queue.add(item).id


def test_reset_clears_the_queue_the_review_and_the_graph_state(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir)
    item_id = _queue_proposal(run_dir)
    opt = _sgd()
    with Kernel(run_dir, optimizer=opt) as kernel:
        kernel.log(0, {"train/loss": 1.0})
        kernel.step(0)
    run(capsys, "--dir", run_dir, "set", "lr=0.5", "--next-run")
    state_dir = run_dir / "autopilot"
    (state_dir / "graph.sqlite").write_bytes(b"checkpoints")
    (state_dir / "graph.sqlite.refused").write_bytes(b"a checkpoint the watcher refused")
    (state_dir / "decisions.jsonl").write_text("")

    code, out, _ = run(capsys, "--dir", run_dir, "reset")
    assert code == 0
    assert "1 queued command(s) expired, 1 pending proposal(s) rejected" in out
    [row] = read_ledger(run_dir)
    assert (row.decision, row.reason) == ("expired", "cleared by `autopilot reset`")
    [item] = ReviewQueue(run_dir).items()
    assert (item.id, item.status, item.why) == (item_id, "rejected", "cleared by `autopilot reset`")
    assert not (state_dir / "graph.sqlite").exists()
    assert not (state_dir / "graph.sqlite.refused").exists()
    assert (state_dir / "decisions.jsonl").exists() and (run_dir / "metrics.jsonl").exists()

    with Kernel(run_dir, optimizer=opt) as kernel:
        kernel.step(0)
    assert opt.param_groups[0]["lr"] == 0.1 and len(read_ledger(run_dir)) == 1


def test_reset_refuses_while_training_runs(tmp_path: Path, capsys) -> None:
    with Kernel(tmp_path / "run", optimizer=_sgd()) as kernel:
        code, _, err = run(capsys, "--dir", kernel.run_dir, "reset")
    assert code == 2 and "is live" in err and "stop it first" in err


def test_reset_refuses_while_a_watcher_runs(ended: Path, capsys) -> None:
    (ended / "autopilot").mkdir()
    fd = acquire(ended / "autopilot" / "watch.lock", "auto")
    try:
        code, _, err = run(capsys, "--dir", ended, "reset")
    finally:
        os.close(fd)
    assert code == 2 and "is watching" in err
    assert run(capsys, "--dir", ended, "reset")[0] == 0
