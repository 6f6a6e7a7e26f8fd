"""The watcher's graph checkpoint in PostgreSQL (``checkpointer_for`` with a PostgreSQL
memory store): a watcher started in a new process, on the run directory mounted at another
path, resumes with the state the first left; a crafted checkpoint there is refused too."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ormsgpack
import psycopg
import pytest
from _runs import write_run as write_kernel_json
from pg_server import fresh_schema

from autopilot._checkpoint import RUN_ID_FILE, checkpointer_for
from autopilot.config import Settings
from autopilot.errors import AutopilotError
from autopilot.watch import Autopilot
from evals.runs import write_run
from kernel import MetricRecord

ROOT = Path(__file__).resolve().parents[2]
_STATE_IN_A_NEW_PROCESS = """
import json, sys
from autopilot.config import Settings
from autopilot.watch import Autopilot

settings = Settings.model_validate({"memory": {"url": sys.argv[2]}})
with Autopilot(sys.argv[1], mode="off", settings=settings) as pilot:
    state = pilot.graph.get_state({"configurable": {"thread_id": pilot._thread}})
    print(json.dumps({"thread": pilot._thread, "values": state.values}))
"""


def _losses(stop: int) -> list[MetricRecord]:
    return [MetricRecord(step=s, metrics={"train/loss": 2.0 / (1 + s)}) for s in range(stop)]


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as schema_url:
        yield schema_url


def test_a_watcher_elsewhere_resumes_the_state_kept_in_postgres(tmp_path: Path, url: str) -> None:
    settings = Settings.model_validate({"memory": {"url": url}})
    run = write_run(tmp_path / "here" / "run", _losses(300))
    write_kernel_json(run.path, step=299)
    with Autopilot(run.path, mode="off", settings=settings) as pilot:
        state = pilot.tick()
        thread = pilot._thread
    assert state["step"] == 299 and state["metrics_offset"] > 0
    assert not (run.path / "autopilot" / "graph.sqlite").exists()
    assert thread.startswith("run.") and thread.endswith(".autopilot-0")
    moved = shutil.copytree(run.path, tmp_path / "mounted" / "elsewhere" / "run")
    done = subprocess.run(
        [sys.executable, "-c", _STATE_IN_A_NEW_PROCESS, str(moved), url],
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    assert resumed["thread"] == thread
    assert resumed["values"] == json.loads(json.dumps(state))


def test_another_run_gets_another_thread(tmp_path: Path, url: str) -> None:
    settings = Settings.model_validate({"memory": {"url": url}})
    threads = []
    for name in ("a", "b"):
        state_dir = tmp_path / name / "run" / "autopilot"
        state_dir.mkdir(parents=True)
        saver, pool, thread = checkpointer_for(state_dir.parent, settings)
        pool.close()
        threads.append(thread)
        again = checkpointer_for(state_dir.parent, settings)  # the id is kept in the run
        again.conn.close()
        assert again.thread == thread and (state_dir / RUN_ID_FILE).exists()
    assert threads[0] != threads[1]


def test_a_crafted_checkpoint_in_postgres_is_refused_and_deleted(
    tmp_path: Path, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.model_validate({"memory": {"url": url}})
    run = write_run(tmp_path / "run", _losses(50))
    write_kernel_json(run.path, step=49)
    with Autopilot(run.path, mode="off", settings=settings) as pilot:
        pilot.tick()
    marker = tmp_path / "owned"
    rebuild = ormsgpack.Ext(1, ormsgpack.packb(["os", "mkdir", [str(marker)]]))
    with psycopg.connect(url, autocommit=True) as pg:
        crafted = pg.execute(
            "UPDATE checkpoint_blobs SET type = 'msgpack', blob = %s", (ormsgpack.packb(rebuild),)
        )
        assert crafted.rowcount > 0
    with caplog.at_level(logging.WARNING), Autopilot(run.path, mode="off", settings=settings):
        pass
    assert not marker.exists()
    assert "was refused" in caplog.text and "deleted" in caplog.text
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT count(*) FROM checkpoint_blobs").fetchone() == (0,)


def test_an_unreachable_checkpoint_database_is_an_error_that_says_so(tmp_path: Path) -> None:
    settings = Settings.model_validate({"memory": {"url": "postgresql://u:pw@127.0.0.1:9/m"}})
    run = write_run(tmp_path / "run", _losses(5))
    write_kernel_json(run.path, step=4)
    with pytest.raises(AutopilotError, match=r"127\.0\.0\.1:9.*start the server") as caught:
        Autopilot(run.path, mode="off", settings=settings)
    assert "pw@" not in str(caught.value)
