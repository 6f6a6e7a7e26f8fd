"""``launch`` (exported as ``autopilot.launch``; a module of that name would shadow the
function): start a training function in a child process, its autopilot in a thread of
this one, and optionally the HTTP API over it; steer it through the returned handle.

The training function's contract: ``fn(run_dir: str, max_steps: int | None)``, importable
as ``"module:fn"`` (a module-level function passed itself is named that way too). It builds
its own ``kernel.Kernel(run_dir, ...)`` and trains, ending at ``max_steps`` when one is
given (``kernel.should_stop`` ends it early on a ``stop``). It runs in a child process
(``python -m autopilot.launch_child``) that sees the modules this process sees.

Example (``train.py`` defines ``train(run_dir, max_steps)``)::

    from autopilot import launch

    h = launch("train:train", run_dir="runs/exp1", mode="auto", max_steps=2000)
    h.set(lr=3e-4)            # a human command, checked against the run's knobs
    print(h.metrics()[-1])    # the latest metric record
    assert h.wait() == 0      # the training's exit code, once its autopilot has read it all
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.config import MODES, Settings, load_settings
from autopilot.errors import AutopilotError
from autopilot.operations import queue_op, queue_set
from kernel import Command, LedgerRow, MetricRecord, read_kernel_state, read_ledger

logger = logging.getLogger(__name__)

_DRAIN_S = 30.0
"""How long ``wait`` lets the autopilot read the last metrics after the training exited."""


class Launched:
    """A launched run: its child process, its autopilot thread, its server (if any).

    Attributes:
        run_dir: the run directory.
        url: the service's base URL (``http://127.0.0.1:PORT``), ``None`` without ``serve``.
        token: the bearer token the service's writes need, ``None`` without ``serve``.
    """

    def __init__(self, run_dir: Path, process: subprocess.Popen[bytes]) -> None:
        self.run_dir = run_dir
        self.process = process
        self.url: str | None = None
        self.token: str | None = None
        self._pilot_thread: threading.Thread | None = None
        self._pilot_stop = threading.Event()
        self._server: Any = None
        self._server_thread: threading.Thread | None = None

    def wait_started(self, timeout: float = 60.0) -> bool:
        """Wait until the training published its ``kernel.json`` (its knobs, so ``set`` is
        checked against them); ``False`` when it exited first or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while not kernel_started(self.run_dir):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return kernel_started(self.run_dir)
            time.sleep(0.05)
        return True

    def metrics(self) -> list[MetricRecord]:
        """The run's metric records so far (its latest segment)."""
        from autopilot.observe import read_metrics

        return read_metrics(self.run_dir, 0)[0]

    def ledger(self) -> list[LedgerRow]:
        """Every command the kernel handled, as ``autopilot ledger`` shows them."""
        return read_ledger(self.run_dir)

    def set(self, reason: str | None = None, **knobs: object) -> list[Command]:
        """Queue ``set`` commands with source ``human``, as ``autopilot set`` does:
        ``h.set(lr=3e-4)``, ``h.set(lr="x0.5", reason="plateau")``.

        Raises:
            AutopilotError: a value the run's knob refuses, or a run that has ended.
        """
        if not knobs:
            raise AutopilotError("set needs at least one knob, e.g. h.set(lr=3e-4)")
        texts = [f"{name}={_text(value)}" for name, value in knobs.items()]
        return queue_set(self.run_dir, texts, reason=reason).commands

    def stop(self, timeout: float | None = None) -> int | None:
        """Send ``stop`` (the training ends at its next step) and ``wait``."""
        if self.process.poll() is None:
            try:
                queue_op(self.run_dir, "stop", reason="launch handle: stop()")
            except AutopilotError as exc:  # ended meanwhile: nothing to stop
                logger.info("%s", exc)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the training to exit, then for its autopilot to read the rest; the
        child's exit code (``None``: still running after ``timeout`` seconds)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._pilot_thread is not None:
            if kernel_started(self.run_dir):  # else it died before its kernel started
                self._pilot_thread.join(_DRAIN_S)
            self._pilot_stop.set()
            self._pilot_thread.join()
        self._stop_server()
        return code

    def _stop_server(self) -> None:
        if self._server is not None and self._server_thread is not None:
            self._server.should_exit = True
            self._server_thread.join(10)


def launch(
    train: str | Callable[..., Any],
    *,
    run_dir: str | os.PathLike[str],
    mode: str = "suggest",
    serve: bool = False,
    max_steps: int | None = None,
    settings: Settings | None = None,
    config: str | None = None,
) -> Launched:
    """Start ``train`` in a child process on ``run_dir``, the autopilot in ``mode`` in a
    thread of this process, and with ``serve`` the HTTP API over ``run_dir``'s parent on a
    free loopback port (it only serves; this process's autopilot ticks the run).

    Args:
        train: ``"module:fn"`` or a module-level function ``fn(run_dir, max_steps)``.
        run_dir: the run directory (created if missing).
        mode: ``off``, ``suggest``, ``auto``, ``ai_suggest`` or ``ai_auto``.
        serve: also start the service; ``url`` and ``token`` are then set.
        max_steps: passed to ``train`` (``None``: its own length).
        settings: the autopilot's settings (default: ``load_settings(config, run_dir)``).
        config: your ``autopilot.toml``, when ``settings`` is not given.

    Raises:
        AutopilotError: an unknown mode, a target that is not ``module:fn``, another
            autopilot watching the run, or a server that cannot start.
    """
    if mode not in MODES:
        raise AutopilotError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_steps is not None and max_steps < 1:
        raise AutopilotError(f"max_steps must be >= 1, got {max_steps}")
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    settings = settings or load_settings(config, path)
    pilot = _autopilot(path, mode, settings)
    handle = Launched(path, _spawn(_target(train), path, max_steps))
    _start_pilot(handle, pilot)
    if serve:
        try:
            _start_server(handle, config)
        except Exception:
            handle.stop()
            raise
    return handle


def _text(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _target(train: str | Callable[..., Any]) -> str:
    if isinstance(train, str):
        if ":" not in train:
            raise AutopilotError(f"the training function must be module:fn, got {train!r}")
        return train
    module, name = getattr(train, "__module__", None), getattr(train, "__qualname__", "")
    if not module or module == "__main__" or "<" in name:
        raise AutopilotError(
            f"{train!r} cannot be imported by the training process: pass a function defined "
            "at the top level of an importable module, or 'module:fn'"
        )
    return f"{module}:{name}"


def _spawn(target: str, run_dir: Path, max_steps: int | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "autopilot.launch_child", target, "--dir", str(run_dir)]
    if max_steps is not None:
        argv += ["--max-steps", str(max_steps)]
    paths = [p or os.getcwd() for p in sys.path if not p or os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # the modules we see
    return subprocess.Popen(argv, env=env)


def _autopilot(run_dir: Path, mode: str, settings: Settings) -> Any:
    from autopilot.watch import Autopilot

    return Autopilot(run_dir, mode=mode, settings=settings)


def _start_pilot(handle: Launched, pilot: Any) -> None:
    def run() -> None:
        try:
            pilot.run(stop=handle._pilot_stop, until_ended=True)
        except AutopilotError as exc:  # the run directory went away
            logger.warning("%s", exc)
        finally:
            pilot.close()

    handle._pilot_thread = threading.Thread(target=run, name=f"autopilot[{handle.run_dir}]")
    handle._pilot_thread.daemon = True
    handle._pilot_thread.start()


def _start_server(handle: Launched, config: str | None) -> None:
    from autopilot.service import serve_in_thread

    serving = serve_in_thread(handle.run_dir.resolve().parent, config=config, tick=False)
    handle._server, handle._server_thread = serving.server, serving.thread
    handle.url, handle.token = serving.url, serving.token


def kernel_started(run_dir: str | os.PathLike[str]) -> bool:
    """Whether the training has published its ``kernel.json`` (its knobs) yet."""
    try:
        return read_kernel_state(Path(run_dir)) is not None
    except Exception:  # half-written by another tool: not yet
        return False


__all__ = ["Launched", "kernel_started", "launch"]
