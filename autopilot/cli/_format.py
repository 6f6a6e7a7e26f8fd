"""Plain-text rendering shared by the subcommands and the demo: values, tables, the ledger."""

from __future__ import annotations

from collections.abc import Sequence

from kernel import KnobValue, LedgerRow

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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns as text lines, a header line first."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [tuple(headers), *rows]
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
    """The ledger as a table; ``width`` cuts the reason column to that many characters."""
    cells = [_ledger_cells(r, width) for r in rows]
    return table(LEDGER_HEADERS, cells, indent)


def _ledger_cells(row: LedgerRow, width: int | None) -> tuple[str, ...]:
    note = row.error or row.reason or ""
    if width is not None and len(note) > width:
        note = note[: width - 3] + "..."
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
