"""Publishing ``kernel.json``: what the training process tells other processes about itself.

The kernel publishes a full state after it handles commands, at start and close, on the
heartbeat cadence, and whenever a knob moved outside commands (a scheduler or the training
code). Between publications a daemon thread keeps the heartbeat fresh (``Heartbeat``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kernel.heartbeat import Heartbeat
from kernel.knobs import Knob, KnobSpec
from kernel.state import KernelState

logger = logging.getLogger(__name__)


class StatePublisher:
    """Writes the run's ``kernel.json`` from the kernel's parts.

    Args:
        run_dir: the run directory.
        knobs: the kernel's knobs (read at each publication).
        interval_s: the heartbeat cadence.
        progress: the last step and its wall time; it must not hold the kernel alive (the
            heartbeat thread calls it), so the kernel passes a weak one.
    """

    def __init__(
        self,
        run_dir: Path,
        knobs: Mapping[str, Knob],
        interval_s: float,
        progress: Callable[[], dict[str, Any]],
    ) -> None:
        self.run_dir, self.knobs = run_dir, knobs
        self.interval_s, self.progress = interval_s, progress
        self.started_at = time.time()
        self.next_heartbeat = 0.0
        self._published_values: list[Any] = []
        self._heartbeat: Heartbeat | None = None

    def publish(self, **fields: Any) -> None:
        """Write ``kernel.json`` now with ``fields`` (status, cursor, pending, ...)."""
        self.next_heartbeat = time.monotonic() + self.interval_s
        state = KernelState(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self.started_at,
            heartbeat=time.time(),
            **self.progress(),
            **fields,
            knobs=self.specs(),
        )
        self._published_values = self.knob_values()
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self.run_dir, self.interval_s, self.progress)
        self._heartbeat.publish(state)

    def due(self, now: float) -> bool:
        """Whether the state should be published: the heartbeat is due or a knob moved."""
        return now >= self.next_heartbeat or self.knobs_moved()

    def mark_due(self) -> None:
        """Publish at the next flush (something ``kernel.json`` shows changed)."""
        self.next_heartbeat = 0.0

    def knobs_moved(self) -> bool:
        """Whether a knob changed outside commands (a scheduler, the training code) since
        ``kernel.json`` was written. Readers resolve multipliers against the published values,
        so those must not lag by a heartbeat; this costs a few float reads per flush."""
        return self._published_values != self.knob_values()

    def knob_values(self) -> list[Any]:
        values: list[Any] = []
        for knob in self.knobs.values():
            try:
                values.append(knob.get())
            except Exception:  # reported by specs when the state is written
                values.append(None)
        return values

    def specs(self) -> list[KnobSpec]:
        specs = []
        for knob in self.knobs.values():
            try:
                specs.append(knob.spec())
            except Exception as exc:  # a custom knob's getter may fail; keep the others
                logger.warning("knob %s cannot report its value: %s", knob.name, exc)
        return specs

    def stop(self) -> None:
        """Ask the heartbeat thread to end without waiting (safe from a finalizer)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
