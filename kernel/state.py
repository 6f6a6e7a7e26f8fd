"""``kernel.json``: what the training process tells other processes about itself.

Written atomically by the kernel at start, after it handles commands, on a heartbeat cadence
and at close. Readers (CLI, autopilot, service) learn the knobs they may change, with bounds
and current values, the last step, and whether the process is alive (heartbeat age).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from kernel.commands import Command
from kernel.errors import RunDirError
from kernel.jsonl import read_json, write_json_atomic
from kernel.knobs import KnobSpec

STATE_FILE = "kernel.json"
Status = Literal["running", "paused", "stopping", "closed", "crashed"]
FreezeMode = Literal["off", "prod", "replay"]


class PendingCommand(BaseModel):
    """A command read from ``commands.jsonl`` that waits for its ``apply_at_step``."""

    offset: int
    command: Command


class KernelState(BaseModel):
    """The document in ``kernel.json``."""

    schema_version: int = 1
    pid: int
    host: str
    started_at: float
    segment: int = 0
    """Which run in this directory: 0 for the first, +1 each time a new ``Kernel`` starts
    after an earlier run ended. Commands carry it; metrics records do too from segment 1."""
    heartbeat: float
    status: Status = "running"
    last_step: int | None = None
    last_step_time: float | None = None
    """Wall time of the last ``kernel.step``: a process can beat and yet be stuck."""
    cursor: int = 0
    pending: list[PendingCommand] = Field(default_factory=list)
    key_metric: str | None = None
    key_metric_mode: Literal["min", "max"] | None = None
    freeze: FreezeMode = "off"
    knobs: list[KnobSpec] = Field(default_factory=list)

    def knob(self, name: str) -> KnobSpec | None:
        return next((k for k in self.knobs if k.name == name), None)

    def heartbeat_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat


def read_kernel_state(run_dir: str | os.PathLike[str]) -> KernelState | None:
    """The run's ``kernel.json``, or ``None`` when no kernel has started there yet.

    Raises:
        RunDirError: when the file exists but cannot be read as a kernel state.
    """
    path = Path(run_dir) / STATE_FILE
    try:
        raw = read_json(path)
    except ValueError as exc:
        raise RunDirError(
            f"{path} is not valid JSON ({exc}); is another tool writing it?"
        ) from None
    if raw is None:
        return None
    try:
        return KernelState.model_validate(raw)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise RunDirError(f"{path} does not hold a kernel state: {msg}") from None


def write_kernel_state(run_dir: str | os.PathLike[str], state: KernelState) -> None:
    write_json_atomic(Path(run_dir) / STATE_FILE, state.model_dump(mode="json"))
