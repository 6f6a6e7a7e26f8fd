"""``kernel.json``: what the training process tells other processes about itself.

Written atomically by the kernel at start, after it handles commands, on a heartbeat cadence
and at close. Readers (the CLI, the autopilot) learn the knobs they may change, with bounds
and current values, the last step, and whether the process is alive (heartbeat age).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.commands import Command
from kernel.errors import RunDirError
from kernel.jsonl import read_json, write_json_atomic
from kernel.knobs import KnobSpec
from kernel.validation import summarize_validation_error

STATE_FILE = "kernel.json"
AUTOPILOT_DIR = "autopilot"
"""The autopilot's folder in a run directory (decisions, review queue, spend, graph
checkpoints). The autopilot writes it; its name lives here, with the run directory's other
names, because every layer reads the run directory (memory too, which sits below the
autopilot)."""
STALE_AFTER_S = 300.0
"""A heartbeat this old means the process that wrote ``kernel.json`` is gone, even when its
pid cannot be checked (another host) or looks alive (a reused pid)."""
Status = Literal["running", "paused", "stopping", "closed", "crashed"]
FreezeMode = Literal["off", "prod", "replay"]


SnapshotKind = Literal["cadence", "best"]
"""Why a snapshot was taken: its step came due, or the key metric set a new best there."""


class SnapshotInfo(BaseModel):
    """What ``kernel.json`` says of one kept snapshot."""

    step: int
    wall_time: float
    kind: SnapshotKind
    metric: float | None = None
    """The key metric's value logged at the snapshot's step (None: not logged there)."""
    best: bool = False
    """Whether ``rewind --to-best`` would pick it."""


class PendingCommand(BaseModel):
    """A command read from ``commands.jsonl`` that waits for its ``apply_at_step``."""

    offset: int
    command: Command
    line_crc: int | None = None
    """The checksum of the line it was read from (``kernel.ledger.line_crc``)."""


class TaskInfo(BaseModel):
    """What the training is, as far as the kernel can tell: the autopilot's memory finds
    earlier runs of the same task by it. Class names only, never code or data."""

    model_config = ConfigDict(extra="ignore")

    task: str | None = Field(default=None, max_length=200)
    """The user's own name for the task (``Kernel(task=...)``)."""
    model: str | None = Field(default=None, max_length=200)
    optimizer: str | None = Field(default=None, max_length=200)
    n_params: int | None = Field(default=None, ge=0)
    """Trainable parameters the kernel can see (the optimizer's groups and the model)."""
    dataset_size: int | None = Field(default=None, ge=0)
    """``Kernel(dataset_size=...)``, when the script says."""


class KernelState(BaseModel):
    """The document in ``kernel.json``."""

    schema_version: int = 1
    pid: int
    host: str
    started_at: float
    segment: int = 0
    """Which run in this directory: 0 for the first, +1 each time a new ``Kernel`` starts
    after an earlier run ended. Commands carry it; metrics records do too from segment 1."""
    metrics_start: int = 0
    """The byte offset in ``metrics.jsonl`` where this segment's records begin; 0 once the
    file was rotated (the segment's earlier records are in ``metrics.<n>.jsonl``)."""
    heartbeat: float
    status: Status = "running"
    last_step: int | None = None
    last_step_time: float | None = None
    """Wall time of the last ``kernel.step``: a process can beat and yet be stuck."""
    cursor: int = 0
    pending: list[PendingCommand] = Field(default_factory=list)
    """The first pending commands to come due (at most ``PENDING_SHOWN``, soonest first):
    a summary for readers. A restarted kernel finds every pending command again in
    ``commands.jsonl`` (a line with no ledger row), not here."""
    pending_count: int = 0
    """How many commands wait for their ``apply_at_step`` in all."""
    next_due_step: int | None = None
    """The step the soonest pending command waits for."""
    key_metric: str | None = None
    key_metric_mode: Literal["min", "max"] | None = None
    max_steps: int | None = Field(default=None, ge=1)
    """The run's planned length in steps (``Kernel(max_steps=)``, or the trainer's under an
    adapter); None when unknown. Detectors scale their patience to it."""
    freeze: FreezeMode = "off"
    knobs: list[KnobSpec] = Field(default_factory=list)
    snapshots: list[SnapshotInfo] = Field(default_factory=list)
    """The snapshots the kernel keeps for ``rewind``, oldest first."""
    snapshots_off: str | None = None
    """Why the kernel keeps no snapshots although they were asked for (a memory cap)."""
    task: TaskInfo | None = None
    """What is trained (``TaskInfo``); None from kernels older than the field."""

    def knob(self, name: str) -> KnobSpec | None:
        return next((k for k in self.knobs if k.name == name), None)

    def heartbeat_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def is_this_process(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def has_ended(self, now: float | None = None) -> bool:
        """Whether the run that wrote this state is over: it closed or crashed, its process
        (on this host) is dead, or its heartbeat is older than ``STALE_AFTER_S``. A new
        ``Kernel`` on an ended run starts the next segment.

        Example:
            >>> state = KernelState(pid=1, host="h", started_at=0, heartbeat=0, status="closed")
            >>> state.has_ended()
            True
        """
        if self.status in ("closed", "crashed"):
            return True
        here = self.host == socket.gethostname() and self.pid != os.getpid()
        if here and not _pid_alive(self.pid):
            return True
        return self.heartbeat_age(now) > STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a pid out of range
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
        msg = summarize_validation_error(exc, limit=1)
        raise RunDirError(f"{path} does not hold a kernel state: {msg}") from None


def write_kernel_state(run_dir: str | os.PathLike[str], state: KernelState) -> None:
    write_json_atomic(Path(run_dir) / STATE_FILE, state.model_dump(mode="json"))
