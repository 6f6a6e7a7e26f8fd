"""``serve --workers N``: the runs ticked by worker processes, each run by the one that owns
it; the API reports what they do, a mode change reaches them, and a worker that dies is
started again with its runs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from _service_runs import AUTH, TOKEN, poll
from fastapi.testclient import TestClient

from autopilot._watch_lock import LOCK_FILE, holder
from autopilot.service import Fleet, create_app
from autopilot.service.shards import owner

API = "/api/v1"
RUNS = ("exp4", "exp1")  # owned by workers 0 and 1 of 2


def locker(run_dir: Path) -> tuple[str, str | None] | None:
    found = holder(run_dir / "autopilot" / LOCK_FILE)
    return (found.pid, found.mode) if found is not None and found.alive else None


def test_two_workers_tick_the_runs_they_own(root: Path, train) -> None:
    assert [owner(r, 2) for r in RUNS] == [0, 1]
    runs = {name: train(name) for name in RUNS}
    poll(lambda: all(r.step >= 1 for r in runs.values()), what="a step of each run")
    fleet = Fleet(root, default_mode="suggest", poll_s=0.05, workers=2)
    with TestClient(create_app(root, token=TOKEN, fleet=fleet, tick=True)) as client:

        def pilot(name: str) -> dict:
            return client.get(f"{API}/runs/{name}/mode").json()["pilot"]

        for name in RUNS:
            poll(lambda n=name: pilot(n)["ticks"] >= 1, timeout=60, what=f"{name} ticked")
        workers = fleet.pids()[1:]
        assert len(workers) == 2 and os.getpid() not in workers
        lockers = [locker(runs[name].run_dir) for name in RUNS]
        assert lockers == [(str(pid), "suggest") for pid in workers]  # exp4: 0, exp1: 1

        client.put(f"{API}/runs/exp4/mode", json={"mode": "auto"}, headers=AUTH)
        poll(lambda: locker(runs["exp4"].run_dir) == (str(workers[0]), "auto"), what="in auto")
        poll(lambda: pilot("exp4")["mode"] == "auto", timeout=30, what="reported in mode auto")
        assert pilot("exp1")["mode"] == "suggest"

        os.kill(workers[1], signal.SIGKILL)  # the worker of exp1 dies
        poll(lambda: fleet.pids()[2] != workers[1], timeout=30, what="a new worker")
        poll(
            lambda: (lk := locker(runs["exp1"].run_dir)) and lk[0] == str(fleet.pids()[2]),
            timeout=60,
            what="exp1 ticked by the new worker",
        )
        assert poll(lambda: pilot("exp1")["state"] == "ticking", timeout=30, what="reported")
    assert all(locker(r.run_dir) is None for r in runs.values())  # closed on the way out
