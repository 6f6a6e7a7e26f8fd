"""``autopilot watch`` and the watcher line of ``status``, as a new user meets them: a
watcher started before the training, a restarted watcher, a watcher killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _runs import write_run as write_kernel_json

from autopilot.cli import main
from autopilot.cli.watch import DecisionPrinter
from autopilot.config import Settings
from autopilot.watch import Autopilot
from evals.runs import write_run
from kernel import Kernel, MetricRecord
from kernel.metrics import METRICS_FILE
from kernel.state import write_kernel_state


def plateau(start: int, stop: int) -> list[MetricRecord]:
    """``train/loss`` that stops improving at step 300 (the plateau detector's patience)."""
    return [
        MetricRecord(step=s, metrics={"train/loss": 2.0 - 0.003 * min(s, 300) + 0.01 * (s % 3)})
        for s in range(start, stop)
    ]


def test_watch_started_before_the_training_waits_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wait_for: Callable[..., Any]
) -> None:
    run_dir = tmp_path / "run"
    codes: list[int] = []
    argv = ["--dir", str(run_dir), "watch", "--once", "--mode", "off"]
    watcher = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    watcher.start()
    out: list[str] = []

    def said(text: str) -> bool:
        out.append(capsys.readouterr().out)
        return text in "".join(out)

    wait_for(lambda: said(f"waiting for the training to create {run_dir}"), what="the wait")
    run_dir.mkdir()
    wait_for(lambda: said("waiting for the kernel to start"), what="the second wait")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with Kernel(run_dir, optimizer=opt, key_metric="train/loss"):
        watcher.join(timeout=30)
    assert codes == [0] and not watcher.is_alive()
    assert said(f"autopilot watching {run_dir} in mode off")


def test_watch_refuses_bounds_for_a_knob_the_run_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    write_kernel_json(run_dir)
    (run_dir / "autopilot.toml").write_text("[bounds]\nlrr = [1e-4, 0.1]\n")
    code = main(["--dir", str(run_dir), "watch", "--once"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bounds.lrr: this run has no knob of that name; its knobs are grad_clip" in err


def test_a_restarted_watcher_prints_only_new_decisions(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", plateau(0, 700))
    write_kernel_json(run.path, step=699)
    with Autopilot(run.path, mode="suggest", settings=Settings()) as pilot:
        assert pilot.tick()["outcome"] == "diagnosed"
    lines: list[str] = []
    printer = DecisionPrinter(run.path, say=lines.append)  # the restarted watcher
    printer.print_new()
    assert lines == [
        f"1 earlier records (decisions and effects) not shown again: "
        f"autopilot --dir {run.path} decisions"
    ]
    with open(run.path / METRICS_FILE, "a", encoding="utf-8") as f:
        f.writelines(r.to_line() for r in plateau(700, 900))
    # the plateau goes on as one episode: in suggest mode it waits in review, decided once;
    # the auto mode decides it again, since no change answered it
    with Autopilot(run.path, mode="auto", settings=Settings()) as pilot:
        assert pilot.tick()["outcome"] == "diagnosed"
    printer.print_new()
    assert len(lines) > 1 and lines[1].startswith("  step 899: plateau")


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_status_after_kill_9_of_the_watcher_says_it_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wait_for: Callable[..., Any]
) -> None:
    run_dir = tmp_path / "run"
    write_kernel_json(run_dir)
    argv = ["-m", "autopilot", "--dir", str(run_dir), "watch", "--forever", "--mode", "off"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL)
    try:

        def watcher_line() -> str:
            main(["--dir", str(run_dir), "status"])
            out = capsys.readouterr().out
            return next((line for line in out.splitlines() if "watcher" in line), "")

        lock = run_dir / "autopilot" / "watch.lock"
        wait_for(lambda: lock.is_file() and lock.read_text().startswith(f"{proc.pid} "))
        assert f"running (pid {proc.pid}, mode off)" in watcher_line()
        proc.send_signal(signal.SIGKILL)  # and not reaped yet: a zombie, its pid still "alive"
        wait_for(lambda: _state_of(proc.pid) in ("Z", "gone"), what="the kill")
        # a killed process with threads shows Z as soon as its main thread is gone; the
        # kernel drops the lock when the last thread has exited, a moment later
        wait_for(
            lambda: f"not running (last: pid {proc.pid}, mode off)" in watcher_line(),
            what="status to see the watcher gone",
        )
    finally:
        proc.kill()
        proc.wait()


def test_status_shows_the_metrics_of_the_current_run_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = [MetricRecord(step=5630, metrics={"old/loss": 9.0})]
    new = [MetricRecord(step=s, segment=1, metrics={"train/loss": 2.0}) for s in (0, 10)]
    run = write_run(tmp_path / "run", old + new)
    kernel = write_kernel_json(run.path, step=10)
    write_kernel_state(run.path, kernel.model_copy(update={"segment": 1}))
    main(["--dir", str(run.path), "status"])
    out = capsys.readouterr().out
    assert "latest metrics (step 10): train/loss=2" in out
    assert "old/loss" not in out and "5630" not in out
