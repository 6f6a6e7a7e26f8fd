"""The watcher's own state under faults and hostile files: a crafted or garbled graph
checkpoint, its write-ahead log over a long watch, a run directory deleted under a running
watcher, and a watcher killed between a decision and its checkpoint."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from _runs import write_run as write_kernel_json
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from autopilot._checkpoint import WAL_LIMIT_BYTES
from autopilot.config import Settings
from autopilot.decisions import DecisionRecord, parse_record
from autopilot.watch import Autopilot
from evals.runs import write_run
from kernel import MetricRecord
from kernel.metrics import METRICS_FILE

ROOT = Path(__file__).resolve().parents[2]
_KILLED_AT_THE_CHECKPOINT = """
import os, signal, sys
from langgraph.checkpoint.sqlite import SqliteSaver
from autopilot.cli import main

put = SqliteSaver.put

def put_or_die(self, config, checkpoint, metadata, new_versions):
    # route has written its decision; the tick's checkpoint is what is being saved
    if checkpoint["channel_values"].get("last_decision_id"):
        os.kill(os.getpid(), signal.SIGKILL)
    return put(self, config, checkpoint, metadata, new_versions)

SqliteSaver.put = put_or_die
sys.exit(main(sys.argv[1:]))
"""
"""A real watcher, killed -9 by LangGraph's saver just before the checkpoint of the tick
that decided is stored."""


def plateau(start: int, stop: int) -> list[MetricRecord]:
    """``train/loss`` that stops improving at step 300 (the plateau detector's patience)."""
    return [
        MetricRecord(step=s, metrics={"train/loss": 2.0 - 0.003 * min(s, 300) + 0.01 * (s % 3)})
        for s in range(start, stop)
    ]


def append(run_dir: Path, records: list[MetricRecord]) -> None:
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.writelines(r.to_line() for r in records)


def watcher(
    run_dir: Path, tmp_path: Path, *args: str, script: str | None = None
) -> subprocess.Popen[str]:
    """``autopilot watch`` in a process of its own, with a user config outside the run."""
    config = tmp_path / "user.toml"
    if not config.exists():
        config.write_text("[cadence]\npoll_interval_s = 0.01\n")
    argv = ["--dir", str(run_dir), "watch", "--config", str(config), *args]
    command = ["-c", script, *argv] if script else ["-m", "autopilot", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, *command],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def decisions(run_dir: Path) -> list[DecisionRecord]:
    """Every decision line as written (a record written twice appears twice)."""
    lines = (run_dir / "autopilot" / "decisions.jsonl").read_text().splitlines()
    return [r for r in map(parse_record, lines) if isinstance(r, DecisionRecord)]


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """Wait for the process (the timeout only guards against a hung test); code, output."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


# -- 2: the checkpoint is data, never code ---------------------------------------------------
def _craft_checkpoint(db: Path, payload: object) -> None:
    """Put ``payload`` into the latest checkpoint's state, packed as LangGraph packs it."""
    serde = JsonPlusSerializer()
    with closing(sqlite3.connect(db)) as conn, conn:
        rowid, kind, blob = conn.execute(
            "SELECT rowid, type, checkpoint FROM checkpoints ORDER BY checkpoint_id DESC"
        ).fetchone()
        checkpoint = serde.loads_typed((kind, blob))
        checkpoint["channel_values"]["step"] = payload
        crafted = ormsgpack.packb(checkpoint)
        conn.execute("UPDATE checkpoints SET checkpoint = ? WHERE rowid = ?", (crafted, rowid))


def test_a_crafted_checkpoint_never_runs_code_and_the_watcher_starts_afresh(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path / "run", plateau(0, 700))
    write_kernel_json(run.path, step=699)
    with Autopilot(run.path, mode="off", settings=Settings()) as pilot:
        pilot.tick()
    marker = tmp_path / "owned"
    # LangGraph's encoding of "call os.mkdir(marker)" on revive (EXT_CONSTRUCTOR_POS_ARGS)
    call = ormsgpack.Ext(1, ormsgpack.packb(["os", "mkdir", [str(marker)]]))
    db = run.path / "autopilot" / "graph.sqlite"
    _craft_checkpoint(db, call)
    code, output = finish(watcher(run.path, tmp_path, "--once", "--mode", "off"))
    assert not marker.exists()
    assert code == 0, output
    assert "graph checkpoint" in output and "was refused" in output
    assert "holds more than plain values" in output
    assert (db.parent / "graph.sqlite.refused").is_file()  # kept aside, for a look


def test_a_garbled_checkpoint_is_refused_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = write_run(tmp_path / "run", plateau(0, 700))
    write_kernel_json(run.path, step=699)
    state_dir = run.path / "autopilot"
    state_dir.mkdir()
    (state_dir / "graph.sqlite").write_bytes(b"not a database, " * 512)
    with caplog.at_level(logging.WARNING), Autopilot(run.path, mode="suggest") as pilot:
        state = pilot.tick()
    assert "DatabaseError: file is not a database" in caplog.text
    assert (state["outcome"], state["step"]) == ("diagnosed", 699)  # afresh, from the run


# -- 5: the watcher's own files stay small ---------------------------------------------------
def test_the_checkpoint_and_its_wal_stay_bounded_over_a_long_watch(tmp_path: Path) -> None:
    names = [f"train/loss_{i}" for i in range(20)]
    records = [
        MetricRecord(step=s, metrics={n: 1.0 + (s * (i + 1)) % 7 / 10 for i, n in enumerate(names)})
        for s in range(1800)
    ]
    run = write_run(tmp_path / "run", records[:1000])
    write_kernel_json(run.path, step=999)
    db = run.path / "autopilot" / "graph.sqlite"
    wal_sizes = []
    with Autopilot(run.path, mode="auto") as pilot:
        for start in range(1000, 1800, 10):  # 80 ticks of 10 steps of 20 metrics
            append(run.path, records[start : start + 10])
            pilot.tick()
            wal_sizes.append(db.with_name("graph.sqlite-wal").stat().st_size)
        with closing(sqlite3.connect(db)) as conn, conn:
            (checkpoints,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    assert checkpoints == 1  # a resume needs only the latest
    # one tick writes ~40 KB here: unbounded, 80 ticks left a WAL of ~3 MB
    assert max(wal_sizes) < 1.5 * WAL_LIMIT_BYTES
    assert not db.with_name("graph.sqlite-wal").exists()  # folded in on close


# -- 8: a run directory deleted under the watcher ----------------------------------------------
def test_a_watcher_whose_run_directory_is_deleted_exits_and_says_so(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    run = write_run(tmp_path / "run", plateau(0, 50))
    write_kernel_json(run.path, step=49)  # this test's pid: the training is alive
    proc = watcher(run.path, tmp_path, "--mode", "off")
    try:
        assert proc.stdout is not None
        assert "autopilot watching" in proc.stdout.readline()  # it has started
        gone = run.path.rename(tmp_path / "gone")  # at once, even while the watcher writes
        shutil.rmtree(gone)
        code, output = finish(proc)
    finally:
        proc.kill()
        proc.wait()
    assert code == 1, output
    assert f"the run directory {run.path} was deleted" in output


# -- 14: a kill -9 between a decision and its checkpoint -------------------------------------
def test_a_watcher_killed_before_its_checkpoint_does_not_decide_again(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", plateau(0, 700))
    write_kernel_json(run.path, step=699)
    killed = watcher(
        run.path, tmp_path, "--once", "--mode", "auto", script=_KILLED_AT_THE_CHECKPOINT
    )
    code, output = finish(killed)
    assert code == -signal.SIGKILL, output
    [first] = decisions(run.path)
    assert first.route == "kernel" and first.command_ids
    append(run.path, plateau(700, 760))  # the training went on while no one watched
    code, output = finish(watcher(run.path, tmp_path, "--once", "--mode", "auto"))
    assert code == 0, output
    assert [d.id for d in decisions(run.path)] == [first.id]
    commands = (run.path / "commands.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in commands] == first.command_ids
