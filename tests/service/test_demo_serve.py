"""``autopilot demo --serve``: the demo as a real process with the dashboard served beside
it; while the run trains, the API lists it and the dashboard page answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _dashboard_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "the dashboard:" in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError("no dashboard address printed:\n" + "".join(seen))


def test_the_demo_serves_its_dashboard_while_it_trains(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    env.pop("OPENAI_API_KEY", None)
    argv = [sys.executable, "-m", "autopilot", "demo", "--dir", str(tmp_path / "runs" / "demo")]
    argv += ["--steps", "400", "--pace", "0.01", "--serve", "--linger", "0"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = _dashboard_line(proc, time.monotonic() + 60)
        url = line.split("the dashboard: ", 1)[1].split("/dashboard/", 1)[0]
        token = line.rsplit("token: ", 1)[1].strip().rstrip(")")
        listed: list[str] = []
        deadline = time.monotonic() + 30
        while "demo" not in listed and time.monotonic() < deadline:  # once its kernel started
            runs = httpx.get(f"{url}/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
            assert runs.status_code == 200
            listed = [r["id"] for r in runs.json()]
            time.sleep(0.2)
        assert "demo" in listed
        page = httpx.get(f"{url}/dashboard/")
        assert page.status_code == 200 and "train-autopilot" in page.text
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "the dashboard stays up" in out and "the rescued run ends" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
