"""What the LLM policy's prompts say: the fields of the analyst's and the planner's templates.

Every token here is paid on every decision, so each field says what its reader needs once:
the analyst reads the whole summary table; the planner reads the analyst's diagnosis and
the knobs instead. Recent knob changes (from any source) are shown with the effect measured
for the decision that made them, matched by the ledger row's ``proposal_id``.

Whatever comes from the run directory is untrusted (anyone who can write there wrote it):
a name is shown as-is only when it matches ``kernel.untrusted.SAFE_NAME``, and free text (a
knob's description, an earlier decision's diagnosis) is cut short and quoted as a JSON
string, so it reads as data and cannot start a line of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import groupby

from autopilot.diagnoses import Diagnosis
from autopilot.llm import AnalystOutput
from autopilot.policies._base import PastDecision, PolicyContext
from kernel import KnobSpec, LedgerRow, format_value
from kernel.untrusted import SAFE_NAME

RECENT = 5
"""How many recent decisions and knob changes the prompts show."""
MEMORY_CHARS = 1200
"""Memory notes beyond this are cut (about 300 tokens)."""
CLAUSE_CHARS = 60
"""An earlier decision's diagnosis is shown up to its first clause, at most this long."""
DESCRIPTION_CHARS = 80
"""A knob's description is shown up to this many characters."""
NAME_CHARS = 64
"""A name that is not shown as-is is quoted up to this many characters."""


def analyst_fields(ctx: PolicyContext) -> dict[str, object]:
    """The analyst prompt's fields for ``ctx``.

    The table's first line names the step and the key metric, so the prompt does not."""
    memory = ctx.memory_notes.strip()
    if len(memory) > MEMORY_CHARS:
        memory = memory[:MEMORY_CHARS].rsplit(" ", 1)[0] + " [...]"
    header = _header(ctx)
    table = ctx.summary_table.strip() or (
        "Step {step}, key metric {key_metric} ({key_direction}): no metrics yet".format(**header)
    )
    return {
        "summary_table": table,
        "alerts": _lines(_alert_line(d) for d in ctx.diagnoses),
        "history": _history(ctx, why=True),
        "memory": memory or "none",
        "kernel": _lines([_snapshots_line(ctx), *(_reflex_line(r) for r in ctx.reflexes[-3:])]),
    }


def planner_fields(
    ctx: PolicyContext, analysis: AnalystOutput, max_actions: int
) -> dict[str, object]:
    """The planner prompt's fields: the diagnosis, the knobs, what recent changes did.

    Not the whole table: the key metric's row is added only when the analyst's evidence
    gives no number for the key metric."""
    diagnosis = f"{analysis.describe()} (confidence {analysis.confidence:.2f})"
    if analysis.evidence:
        diagnosis += "\nEvidence: " + "; ".join(analysis.evidence)
    key_row = _key_row(ctx.summary_table)
    if key_row and not any(ctx.key_metric in fact for fact in analysis.evidence):
        diagnosis += f"\n{ctx.key_metric} now: {key_row}"
    return {
        **_header(ctx),
        "max_actions": max_actions,
        "diagnosis": diagnosis,
        "knobs": _lines(_knob_line(k) for k in ctx.knobs.values()),
        "history": _history(ctx, why=False),
        "snapshots": _snapshots_line(ctx),
    }


def _snapshots_line(ctx: PolicyContext) -> str:
    if not ctx.snapshots:
        return "none"
    steps = ", ".join(str(s.step) for s in ctx.snapshots)
    best = next((s for s in ctx.snapshots if s.best), None)
    return f"steps {steps}" + (f" (best: step {best.step})" if best is not None else "")


def _reflex_line(reflex: dict[str, object]) -> str:
    return (
        f"reflex at step {reflex.get('step')}: rewound to step {reflex.get('snapshot_step')} "
        f"({_quoted(str(reflex.get('reason', '')), CLAUSE_CHARS)})"
    )


def _header(ctx: PolicyContext) -> dict[str, object]:
    direction = "higher is better" if ctx.key_mode == "max" else "lower is better"
    return {"step": ctx.step, "key_metric": _name(ctx.key_metric), "key_direction": direction}


def _name(name: str) -> str:
    """A knob or metric name: as-is when it matches ``SAFE_NAME``, else quoted and cut."""
    return name if re.fullmatch(SAFE_NAME, name) else _quoted(name, NAME_CHARS)


def _quoted(text: str, limit: int) -> str:
    """Free text from the run directory as data: at most ``limit`` characters, one JSON
    string (ASCII-escaped, so no line separator of any kind survives)."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "..."
    return json.dumps(text, ensure_ascii=True)


def _lines(items: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in items) or "none"


def _alert_line(d: Diagnosis) -> str:
    # Alerts are this tick's (no step needed), and detector messages name their metric.
    where = "" if d.metric in d.message else f" on {d.metric}"
    return f"{d.kind}{where} ({d.severity}): {d.message}"


def _key_row(table: str) -> str:
    """The starred row of ``render_table``'s table in words, or "" if there is none."""
    lines = table.splitlines()
    header = next((line.split() for line in lines if line.startswith("metric ")), [])
    cells = next((line.split() for line in lines if line.startswith("*")), [])
    row = dict(zip(header, cells, strict=False))
    if not {"last", "best", "since", "slope", "short"} <= row.keys():
        return ""
    words = f"{row['last']}, best {row['best']} {row['since']} steps ago, "
    words += f"slope {row['slope']}% per 100 steps ({row['short']}% lately)"
    return words + (f", {row['dir']}" if "dir" in row else "")


def _history(ctx: PolicyContext, *, why: bool) -> str:
    """Recent knob changes (any source) and decisions that changed nothing, oldest first.

    The analyst reads ``why`` each change was made (its decision's diagnosis, first clause)
    to explain what the table shows; the planner reads the effect measured for the decision
    instead, to avoid repeating what did not work."""
    past = ctx.past_decisions[-RECENT:]
    by_id = {p.decision_id: p for p in past if p.decision_id}
    items: list[tuple[int, str]] = []
    # one line per decision's changes; a change without a decision stands alone
    for _, rows in groupby(_knob_changes(ctx.recent_changes), lambda r: r.proposal_id or r.seq):
        group = list(rows)
        what = ", ".join(_change(r) for r in group) + f" ({group[0].source or 'unknown'})"
        decision = by_id.pop(group[0].proposal_id or "", None)
        items.append((group[0].step or 0, _item(what, decision, why)))
    for p in past:
        if p.decision_id is None or p.decision_id in by_id:
            items.append((p.step, _item(", ".join(p.actions) or "no change", p, why)))
    items.sort(key=lambda item: item[0])
    return _lines(f"step {step}: {text}" for step, text in items)


def _item(what: str, decision: PastDecision | None, why: bool) -> str:
    if decision is None:  # a change made outside the autopilot, or by a forgotten decision
        return what
    if why:
        return f"{what}, for: {_quoted(_first_clause(decision.diagnosis), CLAUSE_CHARS + 3)}"
    if not decision.actions and decision.effect is None:
        return what  # nothing was changed, so nothing will be measured
    return f"{what}; effect: {decision.effect or 'not measured yet'}"


def _first_clause(text: str) -> str:
    """A diagnosis up to its first ``;`` or parenthesis, at most ``CLAUSE_CHARS`` long."""
    clause = text.split(";", 1)[0].split(" (", 1)[0].strip()
    if len(clause) <= CLAUSE_CHARS:
        return clause
    return clause[:CLAUSE_CHARS].rsplit(" ", 1)[0] + "..."


def _knob_line(knob: KnobSpec) -> str:
    name = _name(knob.name)
    if knob.kind == "bool":
        line = f"{name}: bool, now {format_value(knob.value)}"
    else:
        lo = "-inf" if knob.lo is None else f"{knob.lo:g}"
        hi = "inf" if knob.hi is None else f"{knob.hi:g}"
        groups = f", {knob.groups} groups" if knob.groups else ""
        line = f"{name}: {knob.scale}, [{lo}, {hi}]{groups}, now {format_value(knob.value)}"
    if not knob.description:
        return line
    return f"{line} ({_quoted(knob.description, DESCRIPTION_CHARS)})"


def _knob_changes(rows: list[LedgerRow]) -> list[LedgerRow]:
    return [r for r in rows if r.decision == "applied" and r.knob][-RECENT:]


def _change(row: LedgerRow) -> str:
    return f"{_name(row.knob or '')} {format_value(row.before)} -> {format_value(row.after)}"
