"""Plain-text rendering shared by the subcommands and the demo: values, tables, the ledger."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from kernel import KnobValue, LedgerRow

LINE_WIDTH = 100
"""Long text (reasons, diagnoses, fallbacks) wraps at this width; nothing is cut."""
LEDGER_HEADERS = ("seq", "step", "decision", "source", "command", "change", "reason / error")


def value_text(value: KnobValue | float | None) -> str:
    """A knob value as a person reads it: ``0.005``, ``1e-07``, ``true``, ``[0.001, 0.01]``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return f"{value:.6g}"


def age_text(seconds: float) -> str:
    """``2.1 s``, ``95 s``, ``12 min``, ``3.5 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def wrap(
    text: str, width: int = LINE_WIDTH, *, prefix: str = "", indent: str | None = None
) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken between words, never cut.

    Runs of whitespace become one space; a word longer than the width keeps a line of its own.

    Args:
        text: what to show, in full.
        width: the longest line, prefix included.
        prefix: starts the first line (``"  step 7: "``).
        indent: starts every other line; as many spaces as ``prefix`` when ``None``.

    Example:
        >>> wrap("lr was halved twice without any improvement", 24, prefix="note: ")
        ['note: lr was halved', '      twice without any', '      improvement']
    """
    rest = " " * len(prefix) if indent is None else indent
    lines = textwrap.wrap(
        " ".join(text.split()),
        width,
        initial_indent=prefix,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [prefix]


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    indent: str = "",
    *,
    wrap_last: int | None = None,
) -> list[str]:
    """Left-aligned columns as text lines, a header line first.

    Args:
        headers: the column titles.
        rows: the cells, one sequence per row, as many as ``headers``.
        indent: starts every line.
        wrap_last: wrap the last column at this width (between words, continued on the
            next lines under itself); ``None`` keeps it on one line, however long.
    """
    body: list[tuple[str, ...]] = []
    for cells in rows:
        *first, last = cells
        parts = wrap(last, wrap_last) if wrap_last is not None else [last]
        body.append((*first, parts[0]))
        body += [(*("" for _ in first), part) for part in parts[1:]]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [tuple(headers), *body]
    ]


def change_text(row: LedgerRow) -> str:
    """What a ledger row changed: ``lr 0.05 -> 0.005``, ``lr`` (nothing changed), ``stop``."""
    if row.knob is None:
        return row.op or "-"
    if row.after is not None:
        return f"{row.knob} {value_text(row.before)} -> {value_text(row.after)}"
    return row.knob


def ledger_lines(
    rows: Sequence[LedgerRow], indent: str = "", width: int | None = None
) -> list[str]:
    """The ledger as a table; ``width`` wraps the reason column at that many characters."""
    return table(LEDGER_HEADERS, [_ledger_cells(r) for r in rows], indent, wrap_last=width)


def _ledger_cells(row: LedgerRow) -> tuple[str, ...]:
    note = row.error or row.reason or ""
    step = "-" if row.step is None else str(row.step)
    return (
        str(row.seq),
        step,
        row.decision,
        row.source or "-",
        row.command_id or "-",
        change_text(row),
        note,
    )


def decision_text(row: LedgerRow) -> str:
    """One sentence for ``--wait``: ``applied human-ab12 at step 212: lr 0.05 -> 0.005``."""
    at = "" if row.step is None else f" at step {row.step}"
    note = row.error or row.reason
    tail = change_text(row) if row.decision == "applied" else (note or change_text(row))
    return f"{row.decision} {row.command_id}{at}: {tail}"
