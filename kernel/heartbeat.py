"""The heartbeat: ``kernel.json`` stays fresh even while one training step takes minutes.

The training thread publishes a full state whenever something changes (and at least every
``heartbeat_interval_s`` of steps). When it has been quiet for longer than that, a daemon
thread re-stamps the last published state's ``heartbeat`` and last step, so peers can tell
a slow step from a dead process. A hung process still beats; ``last_step_time`` tells how
long ago its last step was.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kernel.state import KernelState, write_kernel_state

logger = logging.getLogger(__name__)


class Heartbeat:
    """Writes ``kernel.json`` for the training thread and keeps it beating in between."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        interval_s: float,
        progress: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self._run_dir, self._progress = run_dir, progress
        self._interval = max(interval_s, 0.1)  # 0 means "at every step" for the training thread
        self._lock = threading.Lock()
        self._state: KernelState | None = None
        self._written_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernel-heartbeat", daemon=True)
        self._thread.start()

    def publish(self, state: KernelState) -> None:
        """Write ``state`` now (training thread)."""
        with self._lock:
            write_kernel_state(self._run_dir, state)
            self._state, self._written_at = state, time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a full disk must not kill the thread for good
                logger.exception("heartbeat could not write kernel.json; retrying")

    def _beat(self) -> None:
        if not os.path.isdir(self._run_dir):  # the run directory was removed: nothing to keep
            self._stop.set()
            return
        with self._lock:
            state = self._state
            if state is None or state.status in ("closed", "crashed"):
                return
            if time.monotonic() - self._written_at < self._interval:
                return
            state = state.model_copy(update={"heartbeat": time.time(), **self._progress()})
            write_kernel_state(self._run_dir, state)
            self._state, self._written_at = state, time.monotonic()

    def stop(self) -> None:
        """Ask the thread to end (safe from a finalizer: does not wait)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
