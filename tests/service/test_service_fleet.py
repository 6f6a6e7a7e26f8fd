"""Many runs from one process: runs found as they appear, an autopilot ticking each run
whose mode is set (API, CLI or config), restarted on a mode change, and a run that a
separate ``watch`` holds left to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _service_runs import AUTH, Training, poll
from fastapi.testclient import TestClient

from autopilot._watch_lock import LOCK_FILE, holder
from autopilot.cli import main
from autopilot.service import Fleet, discover

API = "/api/v1"


def lock_of(run: Training) -> str | None:
    found = holder(run.run_dir / "autopilot" / LOCK_FILE)
    return found.mode if found is not None and found.alive else None


def pilot(client: TestClient, run_id: str = "exp1") -> dict:
    return client.get(f"{API}/runs/{run_id}/mode").json()


def test_runs_are_found_as_they_appear_nested_too(root: Path, train) -> None:
    assert discover(root) == {}
    train("exp1")
    nested = train("team/exp2")
    poll(lambda: len(discover(root)) == 2, what="two runs")
    assert discover(root) == {"exp1": root / "exp1", "team~exp2": nested.run_dir}
    (root / "notes").mkdir()  # a folder with no kernel.json is no run
    assert len(discover(root)) == 2


def test_a_run_is_ticked_once_its_mode_is_set(client: TestClient, fleet: Fleet, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    fleet.start()
    assert pilot(client)["pilot"]["state"] == "idle" and lock_of(run) is None
    answer = client.put(f"{API}/runs/exp1/mode", json={"mode": "suggest"}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["source"] == "mode.json"
    poll(lambda: pilot(client)["pilot"]["state"] == "ticking", what="the autopilot")
    assert lock_of(run) == "suggest"
    poll(lambda: (run.run_dir / "autopilot" / "graph.sqlite").exists(), what="a tick")
    client.put(f"{API}/runs/exp1/mode", json={"mode": "auto"}, headers=AUTH)
    poll(lambda: lock_of(run) == "auto", what="the autopilot restarted in mode auto")
    status = poll(lambda: (s := pilot(client)["pilot"])["ticks"] >= 1 and s, what="a tick")
    assert (status["state"], status["mode"], status["detail"]) == ("ticking", "auto", None)
    assert status["cpu_s"] > 0 and status["last_tick_at"] > 0
    client.put(f"{API}/runs/exp1/mode", json={"mode": None}, headers=AUTH)
    poll(lambda: lock_of(run) is None, what="the autopilot stopped")
    assert pilot(client)["mode"] is None


def test_the_cli_sets_the_mode_the_service_reads(client: TestClient, train, capsys) -> None:
    run = train("exp1")
    assert main(["--dir", str(run.run_dir), "mode", "ai_suggest"]) == 0
    assert "ai_suggest (from mode.json)" in capsys.readouterr().out
    assert pilot(client)["mode"] == "ai_suggest" and pilot(client)["source"] == "mode.json"


def test_serve_mode_is_the_default_and_the_config_can_set_one(root: Path, train) -> None:
    run = train("exp1")
    assert Fleet(root, default_mode="auto").mode_of("exp1").mode == "auto"
    config = root.parent / "autopilot.toml"
    config.write_text('mode = "off"\n')
    found = Fleet(root, config=str(config)).mode_of("exp1")
    assert (found.mode, found.source) == ("off", "config")
    assert Fleet(root).mode_of("exp1").mode is None
    assert run.run_dir.is_dir()


def test_a_run_a_watch_process_holds_is_left_to_it(client: TestClient, fleet: Fleet, train) -> None:
    run = train("exp1")
    (run.run_dir / "autopilot").mkdir(exist_ok=True)
    code = (
        "import sys; from pathlib import Path; from autopilot._watch_lock import acquire;"
        f"acquire(Path({str(run.run_dir / 'autopilot' / LOCK_FILE)!r}), 'auto');"
        "print('held', flush=True); sys.stdin.read()"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None and watcher.stdout.readline() == "held\n"
        client.put(f"{API}/runs/exp1/mode", json={"mode": "suggest"}, headers=AUTH)
        fleet.scan()
        state = pilot(client)["pilot"]
        assert state["state"] == "watched" and f"pid {watcher.pid}" in state["detail"]
    finally:
        watcher.communicate("")  # closes stdin: the process ends, its lock goes with it
    fleet.start()
    poll(lambda: lock_of(run) == "suggest", what="the service taking the run over")


def test_an_ended_run_is_not_ticked(client: TestClient, fleet: Fleet, train) -> None:
    run = train("exp1", steps=5)
    run.join()
    client.put(f"{API}/runs/exp1/mode", json={"mode": "auto"}, headers=AUTH)
    fleet.scan()
    assert pilot(client)["pilot"]["state"] == "ended" and lock_of(run) is None
    (summary,) = client.get(f"{API}/runs").json()
    assert summary["status"] == "closed"


def test_an_autopilot_that_cannot_start_says_why(
    client: TestClient, fleet: Fleet, root: Path, train
) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    config = root.parent / "bad.toml"
    config.write_text("[bounds]\nno_such_knob = [0, 1]\n")
    fleet.config = str(config)
    client.put(f"{API}/runs/exp1/mode", json={"mode": "auto"}, headers=AUTH)
    fleet.scan()
    state = poll(
        lambda: (s := pilot(client)["pilot"])["state"] == "failed" and s, what="the failure"
    )
    assert "no_such_knob" in state["detail"] and lock_of(run) is None
