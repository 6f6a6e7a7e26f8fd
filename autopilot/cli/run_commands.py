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

from autopilot import operations
from autopilot.cli._common import CliError, run_dir_of
from autopilot.cli._format import decision_text
from autopilot.errors import AutopilotError
from kernel import Command, KernelState, LedgerRow, append_command, read_kernel_state, read_ledger

_POLL_S = 0.05


def cmd_set(args: argparse.Namespace) -> int:
    """Queue one ``set`` command per ``KNOB=VALUE``, checked against the run's knobs first."""
    run_dir = run_dir_of(args)
    state = read_kernel_state(run_dir)
    try:
        segment = operations.segment_for(run_dir, state, next_run=args.next_run)
        if segment is not None and args.wait:
            raise CliError("--wait waits for a live run; with --next-run the run has not started")
        commands = operations.set_commands(
            state,
            args.assignments,
            segment=segment,
            at_step=args.at_step,
            reason=args.reason,
        )
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    return _queue(run_dir, state, commands, args)


def cmd_op(args: argparse.Namespace) -> int:
    """Queue a run operation: ``stop``, ``pause``, ``resume`` or ``checkpoint``."""
    run_dir = run_dir_of(args)
    try:
        state = operations.live_state(run_dir, args.op)
        command = operations.human_command(op=args.op, reason=args.reason)
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    return _queue(run_dir, state, [command], args)


def cmd_rewind(args: argparse.Namespace) -> int:
    """Queue a ``rewind`` to the last snapshot, the best one, one by step or K back."""
    run_dir = run_dir_of(args)
    target = operations.rewind_target(to_best=args.to_best, to_step=args.to_step, back=args.back)
    try:
        state = operations.live_state(run_dir, "rewind")
        cmd = operations.human_command(op="rewind", reason=args.reason, **target)
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    return _queue(run_dir, state, [cmd], args)


def _queue(
    run_dir: Path, state: KernelState | None, commands: list[Command], args: argparse.Namespace
) -> int:
    for cmd in commands:
        append_command(run_dir, cmd)
        print(f"queued {cmd.id}: {cmd.describe()} ({operations.when_text(cmd, state, run_dir)})")
    if not args.wait:
        return 0
    return _wait(run_dir, [c.id for c in commands], args.timeout)


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
