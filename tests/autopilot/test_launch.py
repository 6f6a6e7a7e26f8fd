"""``autopilot.launch``: a real training function in a child process, its autopilot in a
thread of the test, steered through the handle; the service over it on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _launch_train import train

from autopilot import launch
from autopilot.cli import main
from autopilot.config import Settings
from autopilot.errors import AutopilotError
from autopilot.launcher import kernel_started


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"budget": {"day_ledger": str(tmp_path / "day.jsonl")}})


def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition was never met"
        time.sleep(0.05)


def test_a_launched_run_trains_under_its_autopilot_and_takes_a_human_set(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    h = launch(train, run_dir=run_dir, mode="auto", max_steps=400, settings=_settings(tmp_path))
    assert h.url is None
    assert h.wait_started()
    (command,) = h.set(lr=0.02, reason="from the handle")
    assert h.wait(timeout=120) == 0
    (row,) = [r for r in h.ledger() if r.command_id == command.id]
    assert (row.source, row.knob, row.after, row.decision) == ("human", "lr", 0.02, "applied")
    assert h.metrics()[-1].step == 399


def test_stop_ends_the_training_early(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    h = launch("_launch_train:train", run_dir=run_dir, mode="suggest", settings=_settings(tmp_path))
    _until(lambda: len(h.metrics()) >= 20)
    assert h.stop(timeout=120) == 0
    rows = [r for r in h.ledger() if r.op == "stop"]
    assert rows and rows[0].source == "human"
    assert h.metrics()[-1].step < 9_999


def test_serve_gives_a_url_whose_api_lists_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "exp1"
    h = launch(train, run_dir=run_dir, mode="auto", serve=True, settings=_settings(tmp_path))
    try:
        assert h.url is not None and h.token
        _until(lambda: kernel_started(run_dir))
        reply = httpx.get(f"{h.url}/api/v1/runs", headers={"Authorization": f"Bearer {h.token}"})
        assert reply.status_code == 200
        assert "exp1" in reply.text
    finally:
        assert h.stop(timeout=120) == 0


def test_a_failing_function_returns_its_exit_code(tmp_path: Path) -> None:
    h = launch("_launch_train:broken", run_dir=tmp_path / "run", mode="auto")
    assert h.wait(timeout=120) == 1


def test_refusals_name_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(AutopilotError, match="mode must be one of"):
        launch(train, run_dir=tmp_path, mode="fast")
    with pytest.raises(AutopilotError, match="module:fn"):
        launch("no_colon", run_dir=tmp_path, mode="auto")


def test_the_cli_launches_and_returns_the_exit_code(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    args = ["launch", "_launch_train:train", "--dir", str(run_dir), "--mode", "auto"]
    assert main([*args, "--max-steps", "30"]) == 0
    assert "exited with 0" in capsys.readouterr().out
