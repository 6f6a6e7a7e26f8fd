"""The run-directory lifecycle: run segments, and what is left over from an ended run.

A run directory may see several runs: a script run again, a job restarted after a crash.
Each run is a *segment* (``kernel.json``'s ``segment``: 0, 1, ...). A new ``Kernel`` on a
directory whose last run has ended (``KernelState.has_ended``) starts the next segment, and
nothing queued for the earlier run is applied: every command line after the old cursor and
every pending command is recorded as ``expired``, unless it names the new segment
(``Command.segment``, written by ``autopilot set --next-run``). A ``Kernel`` created again
while the run is live (the same process, a live heartbeat) continues its segment.

``clear_queued`` does the same expiry on demand, between runs (``autopilot reset``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kernel.commands import COMMANDS_FILE, Command, parse_command_line
from kernel.errors import CommandError, KernelError, RunDirError
from kernel.jsonl import JsonlTail
from kernel.ledger import Decision, Ledger, LedgerRow, command_fields, line_crc
from kernel.state import read_kernel_state, write_kernel_state

__all__ = ["clear_queued", "plan_start"]

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Start:
    """Where a new kernel starts: its segment and command cursor."""

    segment: int = 0
    cursor: int = 0
    """Where reading ``commands.jsonl`` resumes: the first line without a ledger row (a
    pending command, or one whose row could not be written), else the old cursor."""
    new_segment: bool = False
    """True when the previous run had ended: metrics start a new curve."""


def plan_start(run_dir: Path, ledger: Ledger) -> Start:
    """How a kernel starting now on ``run_dir`` continues from what is there.

    Leftovers of an ended run are recorded in ``ledger`` as ``expired`` (the ledger's
    ``segment`` is set to the new segment first, so the rows belong to it). Pending commands
    are found again as lines with no row (``kernel.json`` lists only the first few).
    """
    try:
        previous = read_kernel_state(run_dir)
    except KernelError as exc:
        logger.warning("ignoring the previous kernel.json: %s", exc)
        return _after_lost_state(run_dir, ledger)
    if previous is None:
        return Start()
    if not previous.has_ended():
        if not previous.is_this_process():
            logger.warning(
                "kernel.json in %s says a live kernel (pid %s on %s) writes to it; "
                "two training processes must not share a run directory",
                run_dir,
                previous.pid,
                previous.host,
            )
        unanswered = [offset for offset, _ in unanswered_lines(run_dir, ledger)]
        cursor = min([o for o in unanswered if o < previous.cursor], default=previous.cursor)
        return Start(segment=previous.segment, cursor=cursor)
    segment = previous.segment + 1
    ledger.segment = segment
    kept, _ = expire_leftovers(run_dir, ledger, keep_segment=segment)
    cursor = min([o for o in kept if o < previous.cursor], default=previous.cursor)
    logger.info("run segment %d starts in %s (the previous run had ended)", segment, run_dir)
    return Start(segment=segment, cursor=cursor, new_segment=True)


def _after_lost_state(run_dir: Path, ledger: Ledger) -> Start:
    """kernel.json is unreadable: which run it described is unknown, so a new segment starts
    and every command line not in the ledger is a leftover."""
    segment = ledger.last_segment + 1
    ledger.segment = segment
    expire_leftovers(run_dir, ledger, keep_segment=segment)
    return Start(segment=segment, new_segment=True)


def unanswered_lines(run_dir: Path, ledger: Ledger) -> list[tuple[int, str]]:
    """Every line of ``commands.jsonl`` (blank ones too) that has no row in ``ledger``."""
    lines = JsonlTail(run_dir / COMMANDS_FILE, keep_blank=True).read_new()
    return [(o, text) for o, text in lines if not ledger.answered(o, line_crc(text))]


def expire_leftovers(
    run_dir: Path, ledger: Ledger, *, keep_segment: int | None, why: str | None = None
) -> tuple[list[int], list[LedgerRow]]:
    """Record ``expired`` for each command line not answered yet (a pending command, one
    queued after the cursor), except those meant for ``keep_segment``; return the offsets of
    the unanswered lines kept and the rows written. A malformed line is kept: the kernel
    rejects it, with its reason, when it reads it."""
    kept, rows = [], []
    for offset, text in unanswered_lines(run_dir, ledger):
        try:
            cmd = parse_command_line(text)
        except CommandError:
            kept.append(offset)
            continue
        if keep_segment is not None and cmd.segment == keep_segment:
            kept.append(offset)
        else:
            rows.append(_expire(ledger, offset, line_crc(text), cmd, why))
    return kept, rows


def clear_queued(run_dir: Path, why: str) -> list[LedgerRow]:
    """Expire every command queued in ``run_dir`` and not yet answered (pending ones, lines
    after the cursor, those for the next run), recording ``why``; return the rows written.

    Raises:
        RunDirError: when the run is live: its kernel decides about its commands.
    """
    state = read_kernel_state(run_dir)
    if state is not None and not state.has_ended():
        raise RunDirError(
            f"the run in {run_dir} is live (pid {state.pid} on {state.host}); stop it first "
            f"(`autopilot --dir {run_dir} stop`), then clear what is queued"
        )
    ledger = Ledger(run_dir, segment=0 if state is None else state.segment)
    _, rows = expire_leftovers(run_dir, ledger, keep_segment=None, why=why)
    if state is not None:
        end = JsonlTail(run_dir / COMMANDS_FILE, state.cursor)
        end.read_new()
        cleared = {"cursor": end.offset, "pending": [], "pending_count": 0, "next_due_step": None}
        write_kernel_state(run_dir, state.model_copy(update=cleared))
    return rows


def _expire(ledger: Ledger, offset: int, crc: int, cmd: Command, why: str | None) -> LedgerRow:
    return ledger.record(
        step=None,
        decision="expired",
        **command_fields(cmd, offset, crc),
        reason=why or _left_over(ledger.segment),
    )


def _left_over(segment: int) -> str:
    return (
        f"left over from an earlier run (queued for it, or after it ended); this is run "
        f"segment {segment}, and nothing queued for an earlier run is applied. Send it "
        "again, or queue it with `autopilot set --next-run` before a run starts"
    )


def segment_mismatch(cmd: Command, segment: int) -> tuple[Decision, str] | None:
    """``(decision, reason)`` for a command that names another segment than ``segment``,
    or None when it may run now."""
    if cmd.segment is None or cmd.segment == segment:
        return None
    if cmd.segment < segment:
        return "expired", (
            f"meant for run segment {cmd.segment}, which has ended; this is segment {segment}"
        )
    return "rejected", (
        f"meant for run segment {cmd.segment}, a later run; this is segment {segment}. "
        "Send it without a segment to change this run"
    )
