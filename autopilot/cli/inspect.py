"""``autopilot status`` and ``autopilot ledger``: what a run is doing and what happened to it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autopilot.cli._common import CliError, run_dir_of
from autopilot.cli._format import age_text, ledger_lines, table, value_text
from autopilot.cli._status_autopilot import autopilot_lines
from autopilot.metrics_tail import latest_values, recent_metrics
from kernel import (
    CommandError,
    KernelState,
    KnobSpec,
    MetricRecord,
    parse_command_line,
    read_freeze,
    read_kernel_state,
    read_ledger,
)
from kernel.commands import COMMANDS_FILE
from kernel.jsonl import JsonlTail

STALE_HEARTBEAT_S = 30.0
_NAMES_TAIL_BYTES = 1 << 20
"""How much of the metrics file ``status`` reads to learn which metrics are logged."""
_STATUS_ROWS = 5


def cmd_status(args: argparse.Namespace) -> int:
    """Print the run's state, knobs, pending commands, recent ledger rows and metrics."""
    run_dir = run_dir_of(args)
    state = read_kernel_state(run_dir)
    if state is None:
        print(
            f"no kernel has started in {run_dir} yet; start the training with "
            f"Kernel({str(run_dir)!r}, ...)"
        )
        return 1
    for block in (
        _summary(run_dir, state),
        _knobs(state),
        _pending(run_dir, state),
        _snapshots(run_dir, state),
        _recent_ledger(run_dir),
        _latest_metrics(run_dir, state),
        autopilot_lines(run_dir),
    ):
        print("\n".join(block))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    """Print the ledger as a table, or as JSON lines with ``--json``."""
    run_dir = run_dir_of(args)
    if args.tail is not None and args.tail < 1:
        raise CliError(f"--tail must be at least 1, got {args.tail}")
    rows = read_ledger(run_dir)
    rows = rows[-args.tail :] if args.tail else rows
    if args.json:
        sys.stdout.write("".join(r.model_dump_json(exclude_none=True) + "\n" for r in rows))
    elif not rows:
        print(f"the ledger of {run_dir} is empty: the kernel has handled no command yet")
    else:
        print("\n".join(ledger_lines(rows)))
    return 0


def _snapshots(run_dir: Path, state: KernelState) -> list[str]:
    """The snapshots a rewind can name, and the reflex rewinds of this segment."""
    kept = [f"{s.step}{' (best)' if s.best else ''}" for s in state.snapshots]
    reflexes = [
        r
        for r in read_ledger(run_dir)
        if r.reflex is not None and (r.segment or 0) == state.segment
    ]
    applied = [r for r in reflexes if r.decision == "applied"]
    lines = ["", f"snapshots   {', '.join(kept) or 'none kept'}"]
    if state.snapshots_off:
        lines.append(f"            off: {state.snapshots_off}")
    if reflexes:
        last = reflexes[-1]
        lines.append(
            f"reflexes    {len(applied)} rewind(s) of {len(reflexes)} trip(s); last at step "
            f"{last.step}: {last.decision}, {last.reason or ''}"
        )
    return lines


def _summary(run_dir: Path, state: KernelState) -> list[str]:
    age = state.heartbeat_age()
    lines = [
        f"run dir     {run_dir}",
        f"status      {_status_text(state)}",
        f"segment     {_segment_text(state)}",
        f"last step   {_last_step_text(state)}",
        f"heartbeat   {age_text(max(age, 0.0))} ago",
        f"freeze      {_freeze_text(run_dir, state)}",
        f"key metric  {state.key_metric or '-'} ({state.key_metric_mode or 'mode unknown'})",
    ]
    if state.status in ("running", "paused") and age > STALE_HEARTBEAT_S:
        lines.append(f"warning: no heartbeat for {age:.0f} s: is the training process alive?")
    return lines + _key_metric_warning(run_dir, state)


def _status_text(state: KernelState) -> str:
    where = f"pid {state.pid} on {state.host}"
    if state.status in ("running", "paused", "stopping") and state.has_ended():
        return f"{state.status} when last heard of, but it has ended ({where} is gone or silent)"
    return f"{state.status} ({where})"


def _segment_text(state: KernelState) -> str:
    """Which run of the directory this is (a script run again starts the next segment)."""
    if state.segment == 0:
        return "0 (the first run in this directory)"
    return f"{state.segment} (run {state.segment + 1} in this directory; earlier runs are history)"


def _key_metric_warning(run_dir: Path, state: KernelState) -> list[str]:
    """The autopilot's own rule (``context.key_metric_note``) over the names logged lately."""
    from autopilot.config import load_settings
    from autopilot.context import key_metric_note
    from autopilot.errors import AutopilotError

    try:
        settings = load_settings(None, run_dir)
    except AutopilotError as exc:
        return [f"warning: the autopilot's config cannot be read: {exc}"]
    names = latest_values(_this_segment(recent_metrics(run_dir, _NAMES_TAIL_BYTES), state))
    note = key_metric_note(state, settings, names, state.last_step or 0)
    return [f"warning: {note}"] if note else []


def _last_step_text(state: KernelState) -> str:
    if state.last_step is None:
        return "-"
    if state.last_step_time is None:
        return str(state.last_step)
    return f"{state.last_step} ({age_text(max(time.time() - state.last_step_time, 0.0))} ago)"


def _freeze_text(run_dir: Path, state: KernelState) -> str:
    if state.freeze != "replay":
        return state.freeze
    recipe = read_freeze(run_dir).recipe
    return f"replay (recipe {recipe})" if recipe else "replay"


def _knobs(state: KernelState) -> list[str]:
    if not state.knobs:
        return ["", "knobs: none"]
    rows = [
        (k.name, value_text(k.value), _bounds(k), "-" if k.kind == "bool" else k.scale)
        for k in state.knobs
    ]
    return ["", "knobs", *table(("name", "value", "bounds", "scale"), rows, indent="  ")]


def _bounds(spec: KnobSpec) -> str:
    if spec.kind == "bool":
        return "true/false"
    return f"[{value_text(spec.lo)}, {value_text(spec.hi)}]"


def _pending(run_dir: Path, state: KernelState) -> list[str]:
    rows = [
        (p.command.id, p.command.describe(), f"waits for step {p.command.apply_at_step}")
        for p in state.pending
    ]
    if state.pending_count > len(state.pending):  # kernel.json lists the soonest only
        more = state.pending_count - len(state.pending)
        rows.append(("...", f"{more} more", "wait for a later step"))
    for offset, text in JsonlTail(run_dir / COMMANDS_FILE, offset=state.cursor).read_new():
        try:
            cmd = parse_command_line(text)
            rows.append((cmd.id, cmd.describe(), "queued, not read by the kernel yet"))
        except CommandError as exc:
            rows.append((f"byte {offset}", "malformed", f"will be rejected: {exc.reason}"))
    if not rows:
        return ["", "pending commands: none"]
    return ["", "pending commands", *table(("command", "change", "state"), rows, indent="  ")]


def _recent_ledger(run_dir: Path) -> list[str]:
    rows = read_ledger(run_dir)
    if not rows:
        return ["", "ledger: empty"]
    title = f"last {min(len(rows), _STATUS_ROWS)} of {len(rows)} ledger rows"
    return ["", title, *ledger_lines(rows[-_STATUS_ROWS:], indent="  ", width=70)]


def _this_segment(records: list[MetricRecord], state: KernelState) -> list[MetricRecord]:
    """The records of the kernel's current run segment (a reused directory holds older
    runs' metrics too, with steps from before 0)."""
    return [r for r in records if r.segment == state.segment]


def _latest_metrics(run_dir: Path, state: KernelState) -> list[str]:
    records = _this_segment(recent_metrics(run_dir), state)
    if not records:
        return ["", "metrics: none yet in this run"]
    last = records[-1]
    line = ", ".join(f"{k}={value_text(v)}" for k, v in last.metrics.items())
    older = [
        f"{k}={value_text(v)} (step {s})"
        for k, (s, v) in latest_values(records).items()
        if k not in last.metrics
    ]
    lines = ["", f"latest metrics (step {last.step}): {line or '-'}"]
    return lines + ([f"  earlier: {', '.join(older)}"] if older else [])
