"""The service's HTTP bodies: what the API takes and answers, beyond the core's own models
(``KernelState``, ``LedgerRow``, ``DecisionView``, ``ReviewItem``, ``Command``, ``Lesson``),
which it sends as they are."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import Mode
from autopilot.guards import Verdict
from autopilot.review import ReviewItem
from autopilot.run_mode import ModeSource
from autopilot.service.runs import PilotState, PilotStatus
from kernel import Command, KernelState
from memory.lessons import Lesson

RUN_ID = r"^[A-Za-z0-9_.\-~]{1,200}$"
Assignment = Annotated[str, Field(min_length=3, max_length=200, examples=["lr=x0.5"])]
Reason = Annotated[str | None, Field(default=None, max_length=4000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """A refusal: what was wrong and what to do."""

    detail: str


class PilotOut(BaseModel):
    """What the service's autopilot does with the run, and what its ticks cost so far."""

    state: PilotState
    mode: Mode | None = None
    detail: str | None = None
    ticks: int = 0
    cpu_s: float = 0.0
    """CPU seconds of this run's ticks (its thread's time)."""
    last_tick_at: float | None = None
    """When its last tick ended (Unix time)."""

    @classmethod
    def of(cls, status: PilotStatus) -> PilotOut:
        return cls(
            state=status.state,
            mode=status.mode,
            detail=status.detail,
            ticks=status.ticks,
            cpu_s=round(status.cpu_s, 4),
            last_tick_at=status.last_tick_at,
        )


class RunSummary(BaseModel):
    """One run as the runs list shows it."""

    id: str
    status: str
    """The kernel's status, ``ended`` once its process is gone, ``waiting`` before it starts."""
    segment: int | None = None
    last_step: int | None = None
    heartbeat_age_s: float | None = None
    key_metric: str | None = None
    key_value: float | None = None
    key_step: int | None = None
    mode: Mode | None = None
    mode_source: ModeSource = "unset"
    pilot: PilotOut
    fallback_reason: str | None = None
    spend_usd: float | None = None
    pending_reviews: int = 0


class RunDetail(RunSummary):
    """One run in full: the summary and its ``kernel.json``."""

    kernel: KernelState | None = None
    decisions: int = 0


class Series(BaseModel):
    steps: list[int]
    values: list[float | None]
    """``None`` where the logged value was not finite (NaN, an infinity)."""
    points: int
    """How many points the series has from the offset on, before downsampling."""


class MetricsPage(BaseModel):
    """The metrics appended from byte ``offset`` to ``next_offset`` (pass it next time)."""

    offset: int
    next_offset: int
    segment: int | None = None
    downsampled: bool = False
    series: dict[str, Series]
    rewinds: list[tuple[int, int]] = Field(default_factory=list)
    """``(step, snapshot step)`` of each rewind in the page: the steps between belong to an
    abandoned trajectory."""


class SetIn(_Body):
    """``autopilot set``: one assignment per knob, checked against the run's knobs."""

    op: Literal["set"]
    assignments: list[Assignment] = Field(min_length=1, max_length=20)
    at_step: int | None = Field(default=None, ge=0, le=2**53)
    next_run: bool = False
    reason: Reason = None


class OpIn(_Body):
    """``autopilot stop | pause | resume | checkpoint``."""

    op: Literal["stop", "pause", "resume", "checkpoint"]
    reason: Reason = None


class ToStep(_Body):
    """The newest snapshot taken at ``step`` or before."""

    step: int = Field(ge=0, le=2**53)


class Back(_Body):
    """The ``back``-th newest snapshot (1: the last one)."""

    back: int = Field(ge=1, le=1000)


class RewindTarget(_Body):
    """``autopilot rewind``: to the last snapshot, the best one, the newest at a step
    (``{"step": N}``) or the K-th newest (``{"back": K}``)."""

    to: Literal["last", "best"] | ToStep | Back = "last"
    reason: Reason = None


class RewindIn(RewindTarget):
    """A ``rewind`` among the commands."""

    op: Literal["rewind"]


CommandIn = Annotated[SetIn | OpIn | RewindIn, Field(discriminator="op")]


class QueuedOut(BaseModel):
    commands: list[Command]
    when: list[str]


class ApproveIn(_Body):
    """Approve a proposal; each edit (``KNOB=VALUE``, as in ``autopilot set``) replaces the
    action on its knob, or adds one, and is checked by the guards like any proposal."""

    edits: list[Assignment] = Field(default_factory=list, max_length=20)


class RejectIn(_Body):
    why: Reason = None


class ApprovalOut(BaseModel):
    item: ReviewItem
    verdicts: list[Verdict]
    commands: list[Command]


class ModeIn(_Body):
    """The run's mode; ``null`` unsets it (the service stops ticking the run)."""

    mode: Mode | None


class ModeOut(BaseModel):
    mode: Mode | None
    source: ModeSource
    pilot: PilotOut


class FreezeIn(_Body):
    """``autopilot freeze``: ``replay`` names a recipe file inside the service's root."""

    mode: Literal["off", "prod", "replay"]
    recipe: str | None = Field(default=None, min_length=1, max_length=1000)


class BudgetOut(BaseModel):
    spent_run_usd: float
    per_run_usd: float
    spent_day_usd: float
    per_day_usd: float
    remaining_usd: float


class LessonsOut(BaseModel):
    memory: str
    """Where memory is and what it knows of this run's task."""
    lessons: list[Lesson]


class TicketOut(BaseModel):
    """A stream ticket (``?ticket=``) and how long it opens the stream."""

    ticket: str
    ttl_s: float
