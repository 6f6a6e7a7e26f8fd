"""What the memory store holds: runs and the interventions made in them, as typed records.

Every field is written by the autopilot from typed data (a ledger row, an effect record, the
kernel's state), never parsed from prose. A run is found again by its task's fingerprint:
the same script trains the same model classes with the same optimizer on data of the same
size, so runs of one task share a ``TaskFingerprint.key``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["better", "neutral", "worse"]
InterventionOp = Literal["set", "rollback", "rewind", "reflex"]
TRAJECTORY_POINTS = 200
"""A run's stored trajectory keeps at most this many points of its key metric."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TaskFingerprint(_Record):
    """What makes two runs runs of the same task.

    Example:
        >>> a = TaskFingerprint(model="MLP", optimizer="Adam", n_params=19_146)
        >>> a.key() == TaskFingerprint(model="MLP", optimizer="Adam", n_params=19_146).key()
        True
        >>> a.key() == a.model_copy(update={"task": "digits"}).key()
        False
    """

    task: str | None = Field(default=None, max_length=200)
    """The user's own name for the task (``Kernel(task=...)`` or the config), if given."""
    model: str | None = Field(default=None, max_length=200)
    optimizer: str | None = Field(default=None, max_length=200)
    n_params: int | None = Field(default=None, ge=0)
    dataset_size: int | None = Field(default=None, ge=0)
    max_steps: int | None = Field(default=None, ge=1)

    def key(self) -> str:
        """A short stable hash of the fingerprint (the same fields, the same key)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunRecord(_Record):
    """One training run: where, what task, how it started and how it ended."""

    run_id: str = Field(min_length=1, max_length=200)
    run_dir: str = Field(max_length=4000)
    started_at: float
    ended_at: float | None = None
    fingerprint: TaskFingerprint = Field(default_factory=TaskFingerprint)
    start_knobs: dict[str, Any] = Field(default_factory=dict)
    """Knob values at the start (floats, bools, or one float per param group)."""
    key_metric: str | None = Field(default=None, max_length=200)
    key_mode: Literal["min", "max"] | None = None
    best: float | None = None
    final: float | None = None
    trajectory: list[tuple[int, float]] = Field(default_factory=list, max_length=TRAJECTORY_POINTS)
    """The key metric at up to ``TRAJECTORY_POINTS`` steps (``compress_trajectory``)."""

    @property
    def task_key(self) -> str:
        return self.fingerprint.key()


class InterventionRecord(_Record):
    """One change the run saw, with what it answered and what it did."""

    run_id: str = Field(min_length=1, max_length=200)
    step: int = Field(ge=0)
    op: InterventionOp = "set"
    source: str = Field(max_length=40)
    """``rules``, ``ai``, ``tune``, ``human``, ``kernel`` (a reflex)."""
    kind: str | None = Field(default=None, max_length=40)
    """The diagnosis kind it answered (``for_diagnosis``), if any."""
    evidence: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    phase: float | None = Field(default=None, ge=0)
    """How far through the run (``step / max_steps``), when its length is known."""
    knob: str | None = Field(default=None, max_length=200)
    before: Any = None
    after: Any = None
    effect_rel: float | None = None
    """The measured effect against the projected trend (+: better), once measured."""
    verdict: Verdict | None = None
    command_id: str | None = Field(default=None, max_length=200)


def compress_trajectory(
    points: list[tuple[int, float]], limit: int = TRAJECTORY_POINTS
) -> list[tuple[int, float]]:
    """At most ``limit`` of ``points``, evenly spread, the first and last kept.

    Example:
        >>> compress_trajectory([(s, float(s)) for s in range(10)], limit=4)
        [(0, 0.0), (3, 3.0), (6, 6.0), (9, 9.0)]
    """
    if len(points) <= limit:
        return list(points)
    if limit < 2:
        return list(points[-limit:]) if limit else []
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]
