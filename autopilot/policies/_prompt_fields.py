"""What the LLM policy's prompts say: the fields of the analyst's and the planner's templates.

Every token here is paid on every decision, so each field says what its reader needs once:
the analyst reads the whole summary table and what changed when; the planner reads the
analyst's diagnosis, the knobs, and the effect measured for each recent change (matched by
the ledger row's ``proposal_id``) instead. Memory's lessons take at most
``memory.prompt_tokens`` tokens, in whole lines.

Whatever comes from the run directory is untrusted: names and free text go through
``autopilot.prompt_text`` (a name as-is only when it is safe; a knob's description or a
reflex's reason cut short and quoted as a JSON string, so it reads as data and cannot start
a line of its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby

from autopilot.diagnoses import Diagnosis
from autopilot.llm import AnalystOutput
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.prompt_text import name, number, quoted
from autopilot.summary_table import COLUMNS
from autopilot.tokens import count_tokens
from kernel import KnobSpec, KnobValue, LedgerRow

RECENT = 5
"""How many recent decisions and knob changes the prompts show."""
CLAUSE_CHARS = 60
"""A reflex rewind's reason is shown up to this many characters."""
DESCRIPTION_CHARS = 80
"""A knob's description is shown up to this many characters."""


def analyst_fields(ctx: PolicyContext, *, memory_tokens: int) -> dict[str, object]:
    """The analyst prompt's fields for ``ctx``, with at most ``memory_tokens`` of memory.

    The table's first line names the step and the key metric, so the prompt does not."""
    header = _header(ctx)
    table = ctx.summary_table.strip() or (
        "Step {step}, key metric {key_metric} ({key_direction}): no metrics yet".format(**header)
    )
    return {
        "summary_table": table,
        "alerts": _lines(_alert_line(d) for d in ctx.diagnoses),
        "history": _history(ctx, effects=False),
        "memory": memory_section(ctx.memory_notes, memory_tokens),
        "kernel": _lines([_snapshots_line(ctx), *(_reflex_line(r) for r in ctx.reflexes[-3:])]),
    }


def memory_section(notes: str, budget: int) -> str:
    """Memory's lesson lines, best first, as many whole lines as fit in ``budget`` tokens
    (counted offline, the bullets and line breaks included); ``none`` when there are none.

    A line comes from earlier runs, so it is one line of plain text behind a bullet: it
    cannot start a line of its own, whatever it holds.

    Example:
        >>> notes = "plateau lr x0.5: 3 runs, 3 better\\n\\nweak (1 observation): wd x2"
        >>> print(memory_section(notes, 30))
        - plateau lr x0.5: 3 runs, 3 better
        - weak (1 observation): wd x2
        >>> print(memory_section(notes, 15))
        - plateau lr x0.5: 3 runs, 3 better
        >>> memory_section("", 120)
        'none'
    """
    kept: list[str] = []
    for line in filter(None, (" ".join(raw.split()) for raw in notes.splitlines())):
        if count_tokens("\n".join([*kept, f"- {line}"])) > budget:
            break  # the lines are ranked: a later one never displaces an earlier one
        kept.append(f"- {line}")
    return "\n".join(kept) or "none"


def planner_fields(
    ctx: PolicyContext, analysis: AnalystOutput, max_actions: int
) -> dict[str, object]:
    """The planner prompt's fields: the diagnosis, the knobs, what recent changes did.

    Not the whole table: the key metric's row is added only when the analyst's evidence
    gives no number for the key metric."""
    diagnosis = analysis.describe()  # not its confidence: the plan's is capped by it anyway
    if analysis.evidence:
        diagnosis += "\nEvidence: " + "; ".join(analysis.evidence)
    key_row = _key_row(ctx.summary_table, ctx.key_metric)
    if key_row and not any(ctx.key_metric in fact for fact in analysis.evidence):
        diagnosis += f"\n{name(ctx.key_metric)} now: {key_row}"
    return {
        **_header(ctx),
        "max_actions": max_actions,
        "diagnosis": diagnosis,
        "knobs": _lines(_knob_line(k) for k in ctx.knobs.values()),
        "history": _history(ctx, effects=True),
        "snapshots": _snapshots_line(ctx),
    }


def _snapshots_line(ctx: PolicyContext) -> str:
    if not ctx.snapshots:
        return "none"
    steps = ", ".join(str(s.step) for s in ctx.snapshots)
    best = next((s for s in ctx.snapshots if s.best), None)
    return f"steps {steps}" + (f" (best: {best.step})" if best is not None else "")


def _reflex_line(reflex: dict[str, object]) -> str:
    return (
        f"reflex at {reflex.get('step')} rewound to {reflex.get('snapshot_step')} "
        f"({quoted(str(reflex.get('reason', '')), CLAUSE_CHARS)})"
    )


def _header(ctx: PolicyContext) -> dict[str, object]:
    direction = "max" if ctx.key_mode == "max" else "min"
    return {"step": ctx.step, "key_metric": name(ctx.key_metric), "key_direction": direction}


def _lines(items: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in items) or "none"


def _alert_line(d: Diagnosis) -> str:
    # Alerts are this tick's (no step needed), and detector messages name their metric.
    where = "" if d.metric in d.message else f" on {d.metric}"
    return f"{d.kind}{where} ({d.severity}): {d.message}"


def _key_row(table: str, key_metric: str) -> str:
    """The key metric's row of the summary table in words, or "" if there is none."""
    start = f"*{name(key_metric)} "
    row = next((line for line in table.splitlines() if line.startswith(start)), "")
    cells = dict(zip(COLUMNS, row[len(start) :].split(), strict=False))
    if not row or len(cells) < len(COLUMNS):
        return ""
    words = f"{cells['last']}, best {cells['best']} {cells['since']} steps ago, slope "
    return words + f"{cells['slope']}% per 1k steps ({cells['short']}% lately), {cells['dir']}"


def _history(ctx: PolicyContext, *, effects: bool) -> str:
    """Recent knob changes (any source) and decisions that changed nothing, oldest first.

    The analyst reads what changed when, to explain what the table shows; the planner also
    reads the effect measured for each decision, to avoid repeating what did not work."""
    past = ctx.past_decisions[-RECENT:]
    by_id = {p.decision_id: p for p in past if p.decision_id}
    items: list[tuple[int, str]] = []
    # one line per decision's changes; a change without a decision stands alone
    for _, rows in groupby(_knob_changes(ctx.recent_changes), lambda r: r.proposal_id or r.seq):
        group = list(rows)
        what = ", ".join(_change(r) for r in group) + f" {_by(group[0])}"
        decision = by_id.pop(group[0].proposal_id or "", None)
        items.append((group[0].step or 0, _item(what, decision if effects else None)))
    for p in past:
        if p.decision_id is None or p.decision_id in by_id:
            what = ", ".join(p.actions) or "no change"
            items.append((p.step, _item(what, p if effects else None)))
    items.sort(key=lambda item: item[0])
    return _lines(f"{step}: {text}" for step, text in items)


def _by(row: LedgerRow) -> str:
    """Who made a change: its source, and whose proposal a person approved unchanged."""
    who = name(row.source or "unknown")
    return who if row.proposed_by is None else f"{who} (approving {name(row.proposed_by)})"


def _item(what: str, decision: PastDecision | None) -> str:
    """``what`` changed, with the effect measured for ``decision`` when there is one."""
    if decision is None:  # a change made outside the autopilot, or by a forgotten decision
        return what
    if not decision.actions and decision.effect is None:
        return what  # nothing was changed, so nothing will be measured
    return f"{what}; {decision.effect or 'effect not measured yet'}"


def _knob_line(knob: KnobSpec) -> str:
    if knob.kind == "bool":
        line = f"{name(knob.name)} bool {_value(knob.value)}"
    else:
        lo = "-inf" if knob.lo is None else number(knob.lo)
        hi = "inf" if knob.hi is None else number(knob.hi)
        groups = f" {knob.groups} groups" if knob.groups else ""
        line = f"{name(knob.name)} {knob.scale} [{lo}, {hi}]{groups} {_value(knob.value)}"
    if not knob.description:
        return line
    return f"{line} ({quoted(knob.description, DESCRIPTION_CHARS)})"


def _value(value: KnobValue | None) -> str:
    """A knob value in few tokens: ``true``, ``.001``, ``[.001, 1e-4]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(number(v, 4) for v in value) + "]"
    return "none" if value is None else number(value, 4)


def _knob_changes(rows: list[LedgerRow]) -> list[LedgerRow]:
    return [r for r in rows if r.decision == "applied" and r.knob][-RECENT:]


def _change(row: LedgerRow) -> str:
    return f"{name(row.knob or '')} {_value(row.before)}>{_value(row.after)}"
