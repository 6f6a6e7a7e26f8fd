"""Live mode: the autopilot as its own process, as a user runs it beside a training.

``Watcher`` starts a real ``autopilot --dir RUN watch --mode MODE --config CFG`` (the bench's
settings written to ``CFG`` beside the run directory), waits until it says it is watching,
and stops it after the training: a watcher ends by itself once the kernel has marked the run
ended and it has read the last metrics; one that does not is interrupted (SIGINT), then
killed. Its output goes to ``watch.log`` beside the run directory.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from evals.tasks import TASKS, train_task
    >>> run_dir = Path(tempfile.mkdtemp()) / "run"
    >>> with Watcher(run_dir, mode="auto", settings=Settings()) as watcher:  # doctest: +SKIP
    ...     train_task(TASKS["digits/good"], 0, run_dir, on_start=watcher.wait_until_watching)
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from autopilot.config import Settings
from evals.errors import EvalError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
"""How long a watcher may take to start watching (imports, the graph, its checkpoint)."""
END_TIMEOUT_S = 30.0
"""How long a watcher may take to notice the training ended before it is interrupted."""
READY_LINE = "autopilot watching "
"""The line ``autopilot watch`` prints once its autopilot is built, just before it ticks."""
CONFIG_NAME = "autopilot.toml"
LOG_NAME = "watch.log"
_POLL_S = 0.02


class Watcher:
    """A real ``autopilot watch`` subprocess on ``run_dir`` (created when missing).

    Args:
        run_dir: the training's run directory; the config and the log go beside it.
        mode: the autopilot's mode (``auto``, ``ai_auto``).
        settings: the bench's settings, handed to the watcher as its ``--config`` file.
    """

    def __init__(self, run_dir: Path, *, mode: str, settings: Settings) -> None:
        self.run_dir, self.mode = run_dir, mode
        self.config = run_dir.parent / CONFIG_NAME
        self.log = run_dir.parent / LOG_NAME
        self.config.write_text(settings_toml(settings), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.interrupted = False

    def start(self) -> None:
        argv = [sys.executable, "-m", "autopilot", "--dir", str(self.run_dir), "watch"]
        argv += ["--mode", self.mode, "--config", str(self.config)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=_child_env()
            )

    def wait_until_watching(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the watcher printed ``READY_LINE`` (it waits for ``kernel.json``, so
        call this after the kernel has started).

        Raises:
            EvalError: the watcher exited first, or did not get there within ``timeout_s``.
        """
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self._output():
            if self.proc.poll() is not None:
                raise EvalError(
                    f"autopilot watch exited with {self.proc.returncode} before it watched "
                    f"{self.run_dir}: {self._tail()}"
                )
            if time.monotonic() > deadline:
                raise EvalError(
                    f"autopilot watch did not start watching {self.run_dir} within "
                    f"{timeout_s:.0f} s; see {self.log}"
                )
            time.sleep(_POLL_S)

    def stop(self) -> int:
        """Wait for the watcher to end by itself (the training ended), else interrupt it,
        else kill it; its exit status."""
        proc = self.proc
        if proc is None:
            return 0
        try:
            return proc.wait(timeout=END_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.interrupted = True
            logger.warning("autopilot watch on %s did not end by itself: SIGINT", self.run_dir)
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def check(self, status: int) -> None:
        """Raise if the watcher failed on its own (an interrupted one is only logged).

        Raises:
            EvalError: it exited with a non-zero status without being interrupted.
        """
        if status != 0 and not self.interrupted:
            raise EvalError(f"autopilot watch exited with {status}: {self._tail()}")

    def _output(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, lines: int = 8) -> str:
        return " | ".join(self._output().splitlines()[-lines:]) or f"no output (see {self.log})"

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        status = self.stop()
        if exc_type is None:
            self.check(status)


def _child_env() -> dict[str, str]:
    """The environment with this checkout first on ``PYTHONPATH``: the watcher runs the same
    code as the bench (a worktree's, say), not whatever is installed."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def settings_toml(settings: Settings) -> str:
    """``settings`` as an ``autopilot.toml`` (only what differs from the defaults), checked
    to load back as the same settings.

    Raises:
        EvalError: a setting has no TOML form (a ``None`` that is not its default, an
            infinite number), so the watcher would run with other settings.

    Example:
        >>> settings_toml(Settings.model_validate({"cadence": {"tick_every_steps": 5}}))
        'cadence = {tick_every_steps = 5}\\n'
    """
    raw = settings.model_dump(mode="json", exclude_defaults=True)
    text = "".join(f"{_key(k)} = {_value(v)}\n" for k, v in raw.items() if v is not None)
    if Settings.model_validate(tomllib.loads(text)) != settings:
        raise EvalError("the bench's settings do not survive a TOML round trip; pass --config")
    return text


def _key(key: str) -> str:
    return key if key.replace("_", "").isalnum() and key.isascii() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else _inf(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise EvalError(f"a setting of {value!r} has no TOML form; pass the bench a --config file")


def _inf(value: float) -> str:
    return "inf" if value > 0 else "-inf"
