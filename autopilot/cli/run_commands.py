"""``autopilot set`` and the run operations (``stop``, ``pause``, ``resume``, ``checkpoint``,
``rewind``).

Each queues commands in the run's ``commands.jsonl`` with source ``human``; the kernel
applies them at its next safe step and answers in the ledger. ``--wait`` reads that answer.

A run that has ended takes no commands: the next kernel in the directory would record them
as ``expired``. ``set --next-run`` queues changes for that next run instead (they name its
segment).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pydantic import ValidationError

from autopilot.cli._assign import parse_assignment
from autopilot.cli._common import CliError, run_dir_of
from autopilot.cli._format import decision_text
from kernel import (
    Command,
    KernelState,
    LedgerRow,
    append_command,
    new_command_id,
    read_kernel_state,
    read_ledger,
)
from kernel.commands import summarize_command_error

_POLL_S = 0.05


def cmd_set(args: argparse.Namespace) -> int:
    """Queue one ``set`` command per ``KNOB=VALUE``, checked against the run's knobs first."""
    run_dir = run_dir_of(args)
    state = read_kernel_state(run_dir)
    segment = _segment_for(run_dir, state, next_run=args.next_run)
    if segment is not None and args.wait:
        raise CliError("--wait waits for a live run; with --next-run the run has not started")
    assignments = [parse_assignment(text, state) for text in args.assignments]
    commands = [
        _command(
            knob=a.knob,
            value=a.value,
            multiplier=a.multiplier,
            apply_at_step=args.at_step,
            reason=args.reason,
            segment=segment,
        )
        for a in assignments
    ]
    return _queue(run_dir, state, commands, args)


def cmd_op(args: argparse.Namespace) -> int:
    """Queue a run operation: ``stop``, ``pause``, ``resume`` or ``checkpoint``."""
    run_dir = run_dir_of(args)
    state = _live_state(run_dir, args.op)
    return _queue(run_dir, state, [_command(op=args.op, reason=args.reason)], args)


def cmd_rewind(args: argparse.Namespace) -> int:
    """Queue a ``rewind`` to the last snapshot, the best one, one by step or K back."""
    run_dir = run_dir_of(args)
    state = _live_state(run_dir, "rewind")
    if args.to_best:
        target: dict[str, object] = {"to": "best"}
    elif args.to_step is not None:
        target = {"to": "step", "to_step": args.to_step}
    else:
        target = {"to": "last", "back": args.back}
    cmd = _command(op="rewind", reason=args.reason, **target)
    return _queue(run_dir, state, [cmd], args)


def _live_state(run_dir: Path, what: str) -> KernelState | None:
    """``kernel.json`` of a run an op may still reach; ``CliError`` when the run has ended."""
    state = read_kernel_state(run_dir)
    if state is not None and state.has_ended():
        raise CliError(
            f"the run in {run_dir} has ended ({_ended(state)}); there is nothing to {what}"
        )
    return state


def _segment_for(run_dir: Path, state: KernelState | None, *, next_run: bool) -> int | None:
    """The segment a ``set`` names: the next run's with ``--next-run``, else none (the live
    run). Refuses a plain ``set`` on an ended run, and ``--next-run`` on a live one."""
    ended = state is not None and state.has_ended()
    if next_run:
        if state is not None and not ended:
            raise CliError(
                f"the run in {run_dir} is live (pid {state.pid}); --next-run is for a "
                "directory whose run has ended: drop it to change this run"
            )
        return 0 if state is None else state.segment + 1
    if state is not None and ended:
        raise CliError(
            f"the run in {run_dir} has ended ({_ended(state)}); a change queued now would be "
            "expired, never applied, when a run starts there again. To change the next run, "
            f"use `autopilot --dir {run_dir} set --next-run ...`; "
            f"`autopilot --dir {run_dir} reset` clears what is queued"
        )
    return None


def _ended(state: KernelState) -> str:
    if state.status in ("closed", "crashed"):
        return f"{state.status}, segment {state.segment}"
    return f"its process, pid {state.pid} on {state.host}, is gone; segment {state.segment}"


def _command(**fields: object) -> Command:
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return Command(id=new_command_id("human"), source="human", **fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise CliError(f"not a valid command: {summarize_command_error(exc)}") from None


def _queue(
    run_dir: Path, state: KernelState | None, commands: list[Command], args: argparse.Namespace
) -> int:
    for cmd in commands:
        append_command(run_dir, cmd)
        print(f"queued {cmd.id}: {cmd.describe()} ({_when(cmd, state, run_dir)})")
    if not args.wait:
        return 0
    return _wait(run_dir, [c.id for c in commands], args.timeout)


def _when(cmd: Command, state: KernelState | None, run_dir: Path) -> str:
    if cmd.segment is not None and state is not None:
        return f"for the next run in {run_dir} (segment {cmd.segment}), when it starts"
    if state is None:
        return f"no kernel has started in {run_dir} yet; it is read when one does"
    if cmd.apply_at_step is not None and (state.last_step or 0) < cmd.apply_at_step:
        return f"applied at step {cmd.apply_at_step}"
    return "applied at the next step"


def _wait(run_dir: Path, ids: list[str], timeout: float) -> int:
    rows = wait_for_rows(run_dir, ids, timeout)
    for row in rows.values():
        print(decision_text(row))
    missing = [i for i in ids if i not in rows]
    if missing:
        raise CliError(
            f"no decision on {', '.join(missing)} after {timeout:g} s; is the "
            f"training process alive? see `autopilot --dir {run_dir} status`",
            code=1,
        )
    return 0 if all(r.decision == "applied" for r in rows.values()) else 1


def wait_for_rows(run_dir: Path, ids: list[str], timeout: float) -> dict[str, LedgerRow]:
    """Poll the ledger until each id has a row or ``timeout`` passes; return the rows found."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while True:
        found = {r.command_id: r for r in read_ledger(run_dir) if r.command_id in wanted}
        if len(found) == len(wanted) or time.monotonic() >= deadline:
            return {i: found[i] for i in ids if i in found}
        time.sleep(_POLL_S)
