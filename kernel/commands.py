"""Commands: the only way anything outside the training process changes it.

A command is one line of ``commands.jsonl``. It either sets a knob (to a ``value`` or by a
``multiplier`` of the knob's current value) or is an operation on the run (``stop``,
``pause``, ``resume``, ``checkpoint``, ``rewind`` to a snapshot: ``to`` the last one, the
``best`` one or the newest at or before ``to_step``; ``back`` K: the K-th newest). Bounds
and knob names are checked by the kernel when it applies the command, because only the
kernel knows the knobs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    ValidationError,
    model_validator,
)

from kernel.errors import CommandError
from kernel.jsonl import append_line
from kernel.validation import summarize_validation_error

Source = Literal["human", "rules", "ai", "tune", "replay", "api"]
Op = Literal["set", "stop", "pause", "resume", "checkpoint", "rewind"]
RewindTo = Literal["last", "best", "step"]
Intent = Literal["set", "rollback", "rewind"]
"""Why a command exists, as data (never parsed from its reason): an ordinary change, the
undoing of an earlier change (``rolls_back`` names it), or a rewind to a snapshot."""
KnobValue = Union[StrictBool, StrictFloat, Annotated[list[StrictFloat], Field(min_length=1)]]  # noqa: UP007 (a runtime alias)
"""A knob's value: a bool toggle, a number, or one number per optimizer param group."""

COMMANDS_FILE = "commands.jsonl"


class Command(BaseModel):
    """One instruction to the training process.

    Example:
        >>> Command(id="c1", source="human", knob="lr", value=1e-4).op
        'set'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=200)
    source: Source
    op: Op = "set"
    knob: str | None = Field(default=None, min_length=1, max_length=200)
    value: KnobValue | None = None
    multiplier: StrictFloat | None = Field(default=None, gt=0)
    apply_at_step: int | None = Field(default=None, ge=0)
    reason: str | None = Field(default=None, max_length=4000)
    proposal_id: str | None = Field(default=None, max_length=200)
    """The review item this command was approved from, if any."""
    decision_id: str | None = Field(default=None, max_length=200)
    """The autopilot decision that produced this command, if any."""
    proposed_by: Source | None = None
    """Whose idea the command was when it is not its sender's: an autopilot's proposal
    (``rules``, ``ai``, ``tune``) a person approved unchanged has ``source="human"`` (the
    person ordered it) and ``proposed_by`` the proposer. ``None``: the sender's own idea."""
    intent: Intent = "set"
    for_diagnosis: str | None = Field(default=None, min_length=1, max_length=40)
    """The kind of problem this command answers (``divergence``, ``plateau``, ...)."""
    rolls_back: str | None = Field(default=None, min_length=1, max_length=200)
    """For ``intent="rollback"``: the id of the command whose change is undone."""
    bounds: tuple[StrictFloat, StrictFloat] | None = None
    """``[lo, hi]`` the sender judged the change under (its config may be narrower than the
    kernel's bounds); the kernel refuses a result outside them."""
    segment: int | None = Field(default=None, ge=0)
    """The run segment the command is meant for (``kernel.json``'s ``segment``): a command
    for an earlier segment is ``expired``, never applied. ``None``: whichever run is live."""
    to: RewindTo | None = None
    """For ``op="rewind"``: which snapshot (``last`` when omitted)."""
    to_step: int | None = Field(default=None, ge=0)
    """For ``to="step"``: the newest snapshot taken at this step or earlier."""
    back: int | None = Field(default=None, ge=1)
    """For ``to="last"``: the ``back``-th newest snapshot (1: the newest)."""
    created_at: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _rewind_intent(cls, data: object) -> object:
        """A rewind is one by intent too, unless the sender says otherwise."""
        if isinstance(data, dict) and data.get("op") == "rewind" and "intent" not in data:
            return {**data, "intent": "rewind"}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> Command:
        if self.op == "set":
            if self.knob is None:
                raise ValueError("a 'set' command needs a knob")
            if (self.value is None) == (self.multiplier is None):
                raise ValueError("a 'set' command needs exactly one of value or multiplier")
        elif self.knob is not None or self.value is not None or self.multiplier is not None:
            raise ValueError(f"op '{self.op}' takes no knob, value or multiplier")
        self._check_rewind()
        if self.bounds is not None and not self.bounds[0] <= self.bounds[1]:
            raise ValueError(f"bounds must be [lo, hi] with lo <= hi, got {list(self.bounds)}")
        if (self.intent == "rollback") != (self.rolls_back is not None):
            raise ValueError("a rollback names the command it undoes in rolls_back (and only it)")
        return self

    def _check_rewind(self) -> None:
        if self.op != "rewind":
            if self.to is not None or self.to_step is not None or self.back is not None:
                raise ValueError(f"op '{self.op}' takes no to, to_step or back (rewind does)")
            return
        if (self.to == "step") != (self.to_step is not None):
            raise ValueError("a rewind to a step names it in to_step (and only then)")
        if self.back is not None and self.to not in (None, "last"):
            raise ValueError(f"back counts snapshots from the last one; not with to={self.to}")

    def describe(self) -> str:
        """A short human-readable form, e.g. ``lr=0.0001`` or ``lr x0.5`` or ``stop``."""
        if self.op == "rewind":
            if self.to == "step":
                return f"rewind to step {self.to_step}"
            if self.back is not None and self.back > 1:
                return f"rewind back {self.back} snapshots"
            return f"rewind to {self.to or 'last'}"
        if self.op != "set":
            return self.op
        if self.multiplier is not None:
            return f"{self.knob} x{self.multiplier:g}"
        return f"{self.knob}={format_value(self.value)}"


def format_value(value: KnobValue | None) -> str:
    """A knob value as a person types it: ``true``, ``0.0001``, ``[0.001, 0.0001]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return "none" if value is None else f"{value:g}"


def new_command_id(prefix: str = "cmd") -> str:
    """A fresh unique command id."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def parse_command_line(text: str) -> Command:
    """Parse one line of ``commands.jsonl``.

    Raises:
        CommandError: with a one-line reason when the line is not a valid command.
    """
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CommandError(f"a command must be a JSON object, got {type(raw).__name__}")
    try:
        text.encode("utf-8")
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(
            "the command holds text that is not valid Unicode "
            "(a lone surrogate such as \\ud800); send it as UTF-8"
        ) from None
    try:
        return Command.model_validate(raw)
    except ValidationError as exc:
        raise CommandError(summarize_command_error(exc)) from None


def summarize_command_error(exc: ValidationError) -> str:
    """A refused command in one line: one message per field (a bad ``value`` once, not once
    per member of its union), each with the value given."""
    return summarize_validation_error(exc, depth=1, fields=_VALUE_MESSAGE)


_VALUE_MESSAGE = {"value": "must be a finite number, true/false, or a list of finite numbers"}


def append_command(run_dir: str | os.PathLike[str], command: Command) -> int:
    """Append ``command`` to the run directory's ``commands.jsonl``; return its byte offset.

    Safe to call from several processes at once.
    """
    if command.created_at is None:
        command = command.model_copy(update={"created_at": time.time()})
    path = Path(run_dir) / COMMANDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return append_line(path, command.model_dump_json(exclude_none=True))
