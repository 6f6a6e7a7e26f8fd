"""``autopilot review``: the proposals that wait for a person (modes suggest and ai_suggest).

``list`` and ``show`` read the queue; ``approve`` re-runs the guards on the run as it is now
(an ``--edit`` is checked like any proposal) and queues the commands; ``reject`` records why.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from autopilot.cli._assign import parse_assignment
from autopilot.cli._common import CliError, run_dir_of
from autopilot.cli._format import table
from autopilot.cli.decisions import diagnosis_text, verdict_lines
from autopilot.config import load_settings
from autopilot.errors import AutopilotError
from autopilot.proposals import Action
from autopilot.review import ReviewItem, ReviewQueue
from kernel import Command, KernelState, read_kernel_state

LIST_HEADERS = ("id", "step", "status", "proposer", "actions", "cost", "diagnosis")
T = TypeVar("T")


def cmd_list(args: argparse.Namespace) -> int:
    """Print the queue as a table (``--pending``: only the items waiting for a decision)."""
    queue = _queue(args)
    with _review_errors():
        items = queue.items()
    if args.pending:
        items = [i for i in items if i.status == "pending"]
    if not items:
        what = "pending proposals" if args.pending else "proposals"
        print(f"no {what} in the review queue of {queue.run_dir}")
        return 0
    print("\n".join(table(LIST_HEADERS, [_list_row(i) for i in items], wrap_last=60)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one item: diagnoses, proposal, verdicts, and its decision if any."""
    queue = _queue(args)
    item = _call(lambda: queue.get(args.id))
    print("\n".join(item_lines(item)))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve an item (with ``--edit KNOB=VALUE`` changes) and queue its commands."""
    queue = _queue(args)
    state = read_kernel_state(queue.run_dir)
    edits = [_edit_action(text, state) for text in args.edit or ()]
    approval = _call(lambda: queue.approve(args.id, edits=edits))
    item = approval.item
    count = len(approval.commands)
    print(
        f"approved {item.id}: queued {count} command{'s' if count != 1 else ''} "
        f"from {_senders(approval.commands)} (applied at the next step)"
    )
    for command in approval.commands:
        print(f"  {command.id}: {command.describe()}")
    print("  verdicts:")
    print("\n".join(verdict_lines(approval.verdicts, indent="    ")))
    return 0


def _senders(commands: list[Command]) -> str:
    """``human``, and whose idea the commands approved unchanged were: ``human, as
    proposed by ai`` (``human, 1 as proposed by ai`` when some were edited)."""
    sources = " and ".join(dict.fromkeys(c.source for c in commands))
    ideas = [c.proposed_by for c in commands if c.proposed_by is not None]
    if not ideas:
        return sources
    how_many = "" if len(ideas) == len(commands) else f"{len(ideas)} "
    return f"{sources}, {how_many}as proposed by {' and '.join(dict.fromkeys(ideas))}"


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject an item; ``--why`` is kept with it."""
    queue = _queue(args)
    item = _call(lambda: queue.reject(args.id, args.why))
    print(f"rejected {item.id}" + (f": {item.why}" if item.why else ""))
    return 0


def item_lines(item: ReviewItem) -> list[str]:
    """One review item as labelled lines."""
    p = item.proposal
    lines = [f"proposal {item.id}  {_status_text(item)}"]
    prompt = f", prompt {p.prompt_version}" if p.prompt_version else ""
    lines.append(
        f"  proposed at step {item.step} by {p.proposer}{prompt}, confidence "
        f"{p.confidence:g}, cost ${item.usage.cost_usd:.4f}"
    )
    if p.fallback_reason:
        lines.append(f"  fallback: {p.fallback_reason}")
    lines += [f"  found: {diagnosis_text(d)}" for d in item.diagnoses]
    if item.merged_ids:
        steps = ", ".join(str(s) for s in item.merged_steps)
        lines.append(f"  proposed again at steps {steps} ({', '.join(item.merged_ids)})")
    lines.append(f"  diagnosis: {p.diagnosis}")
    if p.reasoning:
        lines.append(f"  reasoning: {' '.join(p.reasoning.split())}")
    lines.append("  verdicts when proposed:")
    lines += verdict_lines(item.verdicts, indent="    ")
    lines += _decision_lines(item)
    return lines


def _decision_lines(item: ReviewItem) -> list[str]:
    if item.decided_at is None:
        return []
    at = "" if item.decided_step is None else f" at step {item.decided_step}"
    lines = [f"  decided: {item.status if item.status != 'applied' else 'approved'}{at}"]
    if item.why:
        lines.append(f"  why: {item.why}")
    if item.edits:
        lines.append("  edits: " + ", ".join(e.describe() for e in item.edits))
    if item.command_ids:
        lines.append("  commands: " + ", ".join(item.command_ids))
    if item.approval_verdicts:
        lines.append("  verdicts when approved:")
        lines += verdict_lines(item.approval_verdicts, indent="    ")
    return lines


def _status_text(item: ReviewItem) -> str:
    if item.status == "pending":
        return f"pending (expires after step {item.expires_after_step})"
    if item.status == "expired":
        return f"expired (after step {item.expires_after_step})"
    return item.status


def _list_row(item: ReviewItem) -> tuple[str, ...]:
    actions = ", ".join(a.describe() for a in item.approved_actions()) or "-"
    if item.merged_ids:
        actions += f" (proposed {1 + len(item.merged_ids)} times)"
    kinds = ", ".join(dict.fromkeys(d.kind for d in item.diagnoses)) or item.proposal.diagnosis
    return (
        item.id,
        str(item.step),
        item.status,
        item.proposal.proposer,
        actions,
        f"${item.usage.cost_usd:.4f}",
        kinds,
    )


def _edit_action(text: str, state: KernelState | None) -> Action:
    assignment = parse_assignment(text, state)
    return Action(
        knob=assignment.knob,
        value=assignment.value,
        multiplier=assignment.multiplier,
        reason="edited in review",
    )


def _queue(args: argparse.Namespace) -> ReviewQueue:
    run_dir = run_dir_of(args)
    with _review_errors():
        return ReviewQueue(run_dir, load_settings(getattr(args, "config", None), run_dir))


def _call(fn: Callable[[], T]) -> T:
    with _review_errors():
        return fn()


@contextmanager
def _review_errors() -> Iterator[None]:
    try:
        yield
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
