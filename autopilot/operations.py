"""A person's commands to a run (``set``, ``stop``, ``pause``, ``resume``, ``checkpoint``,
``rewind``): the checks and the queueing that both front ends, the CLI and the service, use.

A run that has ended takes no commands: the next kernel in the directory would record them
as ``expired``. ``next_run=True`` queues a ``set`` for that next run instead (it names its
segment). Every command has source ``human``; the kernel applies it at its next safe step and
answers in the ledger.

Example:
    >>> import tempfile
    >>> queued = queue_set(tempfile.mkdtemp(), ["lr=x0.5"], reason="plateau")
    >>> queued.commands[0].describe()
    'lr x0.5'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from autopilot.assignments import parse_assignment
from autopilot.errors import AutopilotError
from kernel import Command, KernelState, append_command, new_command_id, read_kernel_state
from kernel.commands import summarize_command_error

RunOp = Literal["stop", "pause", "resume", "checkpoint"]


@dataclass(frozen=True, kw_only=True)
class Queued:
    """Commands appended to ``commands.jsonl``, and the kernel state they were judged on."""

    state: KernelState | None
    commands: list[Command]


def live_state(run_dir: Path, what: str) -> KernelState | None:
    """``kernel.json`` of a run an op may still reach.

    Raises:
        AutopilotError: the run has ended.
    """
    state = read_kernel_state(run_dir)
    if state is not None and state.has_ended():
        raise AutopilotError(
            f"the run in {run_dir} has ended ({ended_text(state)}); there is nothing to {what}"
        )
    return state


def segment_for(run_dir: Path, state: KernelState | None, *, next_run: bool) -> int | None:
    """The segment a ``set`` names: the next run's with ``next_run``, else none (the live
    run).

    Raises:
        AutopilotError: a plain ``set`` on an ended run, or ``next_run`` on a live one.
    """
    ended = state is not None and state.has_ended()
    if next_run:
        if state is not None and not ended:
            raise AutopilotError(
                f"the run in {run_dir} is live (pid {state.pid}); --next-run is for a "
                "directory whose run has ended: drop it to change this run"
            )
        return 0 if state is None else state.segment + 1
    if state is not None and ended:
        raise AutopilotError(
            f"the run in {run_dir} has ended ({ended_text(state)}); a change queued now would "
            "be expired, never applied, when a run starts there again. To change the next run, "
            f"use `autopilot --dir {run_dir} set --next-run ...`; "
            f"`autopilot --dir {run_dir} reset` clears what is queued"
        )
    return None


def ended_text(state: KernelState) -> str:
    """How an ended run ended, for a refusal's message."""
    if state.status in ("closed", "crashed"):
        return f"{state.status}, segment {state.segment}"
    return f"its process, pid {state.pid} on {state.host}, is gone; segment {state.segment}"


def human_command(**fields: object) -> Command:
    """A ``Command`` with source ``human`` and a fresh id; fields that are ``None`` are left
    out.

    Raises:
        AutopilotError: the fields do not make a valid command.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return Command(id=new_command_id("human"), source="human", **fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise AutopilotError(f"not a valid command: {summarize_command_error(exc)}") from None


def set_commands(
    state: KernelState | None,
    texts: list[str],
    *,
    segment: int | None,
    at_step: int | None = None,
    reason: str | None = None,
) -> list[Command]:
    """One ``set`` per ``KNOB=VALUE`` text, each checked against the run's knobs first.

    Raises:
        AutopilotError: a text cannot be read, or the knob would refuse it.
    """
    commands = []
    for text in texts:
        a = parse_assignment(text, state)
        commands.append(
            human_command(
                knob=a.knob,
                value=a.value,
                multiplier=a.multiplier,
                apply_at_step=at_step,
                reason=reason,
                segment=segment,
            )
        )
    return commands


def queue_set(
    run_dir: str | os.PathLike[str],
    texts: list[str],
    *,
    at_step: int | None = None,
    reason: str | None = None,
    next_run: bool = False,
) -> Queued:
    """Check and queue ``set`` commands (``autopilot set``)."""
    path = Path(run_dir)
    state = read_kernel_state(path)
    segment = segment_for(path, state, next_run=next_run)
    commands = set_commands(state, texts, segment=segment, at_step=at_step, reason=reason)
    return _append(path, state, commands)


def queue_op(run_dir: str | os.PathLike[str], op: RunOp, *, reason: str | None = None) -> Queued:
    """Queue a run operation on a run that has not ended."""
    path = Path(run_dir)
    state = live_state(path, op)
    return _append(path, state, [human_command(op=op, reason=reason)])


def rewind_target(
    *, to_best: bool = False, to_step: int | None = None, back: int | None = None
) -> dict[str, object]:
    """The fields of a ``rewind`` command: the best snapshot, the newest at a step, or the
    ``back``-th newest (the last one when nothing is named)."""
    if to_best:
        return {"to": "best"}
    if to_step is not None:
        return {"to": "step", "to_step": to_step}
    return {"to": "last", "back": back}


def queue_rewind(
    run_dir: str | os.PathLike[str], target: dict[str, object], *, reason: str | None = None
) -> Queued:
    """Queue a ``rewind`` (``target`` from ``rewind_target``) on a run that has not ended."""
    path = Path(run_dir)
    state = live_state(path, "rewind")
    return _append(path, state, [human_command(op="rewind", reason=reason, **target)])


def when_text(cmd: Command, state: KernelState | None, run_dir: Path) -> str:
    """When the kernel will apply ``cmd``, in words."""
    if cmd.segment is not None and state is not None:
        return f"for the next run in {run_dir} (segment {cmd.segment}), when it starts"
    if state is None:
        return f"no kernel has started in {run_dir} yet; it is read when one does"
    if cmd.apply_at_step is not None and (state.last_step or 0) < cmd.apply_at_step:
        return f"applied at step {cmd.apply_at_step}"
    return "applied at the next step"


def _append(run_dir: Path, state: KernelState | None, commands: list[Command]) -> Queued:
    for cmd in commands:
        append_command(run_dir, cmd)
    return Queued(state=state, commands=commands)
