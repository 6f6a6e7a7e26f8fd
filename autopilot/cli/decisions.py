"""``autopilot decisions``: what the autopilot decided at each tick, why, and what came of it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from autopilot.cli._common import CliError, run_dir_of
from autopilot.cli._format import LINE_WIDTH, table, value_text, wrap
from autopilot.decisions import (
    DecisionLog,
    DecisionRecord,
    DecisionView,
    EffectRecord,
    parse_record,
)
from autopilot.diagnoses import Diagnosis
from autopilot.guards import Verdict

VERDICT_HEADERS = ("#", "requested", "verdict", "change", "reason")


def cmd_decisions(args: argparse.Namespace) -> int:
    """Print the decision records (``--tail N`` the last N), or JSON lines with ``--json``."""
    run_dir = run_dir_of(args)
    if args.tail is not None and args.tail < 1:
        raise CliError(f"--tail must be at least 1, got {args.tail}")
    views = DecisionLog(run_dir).read()
    views = views[-args.tail :] if args.tail else views
    if args.json:
        sys.stdout.write("".join(v.model_dump_json() + "\n" for v in views))
    elif not views:
        print(
            f"no decisions in {run_dir} yet: the autopilot records one each time it "
            f"diagnoses a problem (start it with `autopilot --dir {run_dir} watch`)"
        )
    else:
        print("\n\n".join("\n".join(decision_lines(v)) for v in views))
    return 0


def decision_lines(view: DecisionView, *, with_effects: bool = True) -> list[str]:
    """One decision as labelled lines: diagnoses, proposer, verdicts, route, effects."""
    r = view.record
    where = f" ({r.proposal_id})" if r.route == "review" and r.proposal_id else ""
    lines = [f"step {r.step}  {r.id}  mode {r.mode} -> {r.route}{where}"]
    lines += _labelled("diagnosis", [diagnosis_text(d) for d in r.diagnoses] or ["-"])
    lines += _labelled("proposer", [_proposer_text(r)])
    if r.proposal is not None:
        p = r.proposal
        lines += _labelled("proposal", [f"confidence {p.confidence:g}: {p.diagnosis}"])
        if p.reasoning:
            lines += _labelled("reasoning", wrap(p.reasoning, LINE_WIDTH - 13))
    if r.verdicts:
        lines += ["  verdicts:", *verdict_lines(r.verdicts, indent="    ")]
    lines += _labelled("commands", [", ".join(r.command_ids) or "-"])
    if with_effects:
        effects = [effect_text(e) for e in view.effects] or ["not measured yet"]
        lines += _labelled("effect", effects)
    if r.note:
        lines += _labelled("note", [r.note])
    return lines


def _change(verdict: Verdict, *, knob: bool = True) -> str:
    """``lr 0.1 -> 0.05`` (``0.1 -> 0.05`` without the knob), or ``rewind to best``."""
    if verdict.requested.op == "rewind":
        return verdict.requested.describe()
    values = f"{value_text(verdict.before)} -> {value_text(verdict.value)}"
    return f"{verdict.knob} {values}" if knob else values


def verdict_lines(verdicts: Sequence[Verdict], indent: str = "") -> list[str]:
    """The guards' verdicts as a table: requested action, verdict, change, reason."""
    rows = [
        (
            str(v.index),
            v.requested.describe(),
            verdict_text(v),
            _change(v, knob=False) if v.passed else "-",
            v.reason,
        )
        for v in verdicts
    ]
    return table(VERDICT_HEADERS, rows, indent)


def verdict_text(v: Verdict) -> str:
    """``clamped (max_step)``: the status, and the guard that decided it when one did."""
    return f"{v.status} ({v.rule})" if v.rule else v.status


def effect_text(effect: EffectRecord) -> str:
    """``lr at step 1210: val/loss better (+4.2% vs projection over 100 steps, ...)``."""
    text = (
        f"{effect.knob} at step {effect.applied_step}: {effect.key_metric} {effect.verdict} "
        f"({effect.change_rel:+.1%} vs projection over {effect.horizon_steps} steps, "
        f"measured at step {effect.measured_at_step})"
    )
    if effect.rolled_back:
        text += f"; rolled back by {effect.rollback_command_id or 'a command'}"
    return text


def _proposer_text(r: DecisionRecord) -> str:
    if r.proposer is None:
        return "none" + (f" (fallback: {r.fallback_reason})" if r.fallback_reason else "")
    parts = [r.proposer + (f" (fallback: {r.fallback_reason})" if r.fallback_reason else "")]
    parts.append(f"prompt {r.prompt_version or '-'}")
    parts.append(f"tokens {r.usage.tokens_in} in / {r.usage.tokens_out} out")
    parts.append(f"${r.usage.cost_usd:.4f}")
    return "  ".join(parts)


def diagnosis_text(d: Diagnosis) -> str:
    """``plateau on val/loss (medium): val/loss has not improved for 400 steps``."""
    return f"{d.kind} on {d.metric} ({d.severity}): {d.message}"


def _labelled(label: str, lines: Sequence[str]) -> list[str]:
    pad = " " * 13
    return [f"  {label:<11}{line}" if n == 0 else pad + line for n, line in enumerate(lines)]


def brief_lines(text: str) -> list[str]:
    """A raw line of ``decisions.jsonl`` for a live stream: what was found, and what was done
    about it, each wrapped between words (``autopilot decisions`` prints the whole record)."""
    try:
        record = parse_record(text)
    except ValidationError:
        return []
    if isinstance(record, EffectRecord):
        text = f"effect of the change to {effect_text(record)}"
        return wrap(text, prefix=f"  step {record.measured_at_step}: ")
    first = record.diagnoses[0] if record.diagnoses else None
    found = f"{first.kind}: {first.message}" if first else "-"
    done = [_change(v) for v in record.verdicts]
    done = [d for d, v in zip(done, record.verdicts, strict=True) if v.status != "rejected"]
    rejected = [v.reason for v in record.verdicts if v.status == "rejected"]
    what = ", ".join(done) or ("nothing: " + rejected[0] if rejected else "nothing")
    via: str = record.proposer or "-"
    if record.fallback_reason:
        via += f" (LLM not used: {record.fallback_reason})"
    return [
        *wrap(found, prefix=f"  step {record.step}: "),
        *wrap(f"{what} [{via}, {_ROUTES[record.route]}]", prefix="    -> ", indent="       "),
    ]


_ROUTES = {"kernel": "sent to the kernel", "review": "queued for review", "none": "no change"}
