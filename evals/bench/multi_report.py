"""The multi-run bench as tables: runs needed per task and policy, and each run against the
oracle (``multi_table``, ``runs_table``), and ``OUT/multi.md`` with every sequence.

Example:
    >>> print(needed_text([1, 2, None], 2, 4))
    2 (1, 2, >4)
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from evals.report import _num, _table, format_duration
from evals.results import MEMORY_POLICIES, MultiCell, MultiReport, MultiSequence

REPORT_FILE = "multi.md"
HEADINGS = {
    "rules": "rules + memory: runs",
    "online": "online + memory: runs",
    "tune": "tune (TPE): trials",
    "random": "random: trials",
}


def needed_text(needed: list[int | None], median: int | None, budget: int) -> str:
    """The median runs needed and each seed's, a miss as ``>budget``."""
    each = ", ".join(_needed(n, budget) for n in needed)
    return f"{_needed(median, budget)} ({each})" if len(needed) > 1 else _needed(median, budget)


def multi_table(report: MultiReport) -> str:
    """Per task: the oracle's final, then per policy the runs (trials) needed, median over
    seeds with each seed's in brackets."""
    header = ["task", f"oracle {report.key_metric}"] + [HEADINGS[p] for p in report.policies]
    rows = []
    for task in report.tasks:
        oracle = report.oracles.get(task)
        row: list[object] = [task, _num(oracle.final if oracle else None)]
        for policy in report.policies:
            cell = _cell(report, task, policy)
            row.append("-" if cell is None else needed_text(cell.needed, cell.median, cell.budget))
        rows.append(row)
    return _table(header, rows)


def runs_table(report: MultiReport, policies: Collection[str] | None = None) -> str:
    """Per task and policy (of ``policies``: all when ``None``), each run's (trial's) final
    against the oracle's, median over seeds (``+12%``: 12 % worse), and how many seeds were
    within the tolerance there."""
    cells = [c for c in report.cells if policies is None or c.policy in policies]
    width = max((len(c.vs_oracle) for c in cells), default=report.runs)
    header = ["task", "policy"] + [str(n) for n in range(1, width + 1)]
    rows = []
    for c in cells:
        seeds = len(c.needed)
        gaps = [f"{_gap(g)} ({k}/{seeds})" for g, k in zip(c.vs_oracle, c.within, strict=True)]
        rows.append([c.task, c.policy, *gaps, *[""] * (width - len(gaps))])
    return _table(header, rows, left=2)


def notes(report: MultiReport) -> list[str]:
    """What a reader must know to trust the table: sequences that ended on an error, and
    ``online`` cells whose tuner proposed nothing (the rules' figure)."""
    lines = [
        f"{s.task} {s.policy} seed {s.seed} ended after {len(s.steps)}: {s.error}"
        for s in report.sequences
        if s.error
    ]
    idle = [c.task for c in report.cells if c.policy == "online" and c.tuner_decisions == 0]
    if idle:
        online = sum(1 for c in report.cells if c.policy == "online")
        lines.append(
            f"online: the online tuner proposed nothing on {len(idle)} of {online} tasks "
            f"({', '.join(idle)}): there, online is the rules with memory"
        )
    return lines


def write_multi_report(report: MultiReport, out: Path) -> Path:
    """Write ``out/multi.md``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(_markdown(report), encoding="utf-8")
    return path


def _markdown(report: MultiReport) -> str:
    skipped = ", ".join(f"{k} ({why})" for k, why in report.skipped.items()) or "-"
    head = [
        f"tasks: {len(report.tasks)}",
        f"policies: {', '.join(report.policies)}; skipped: {skipped}",
        f"seeds: {report.seeds}; runs per autopilot sequence: {report.runs}; "
        f"trials per search: at most {report.trials}",
        f"within: {100 * report.tolerance:g} % of the oracle's final {report.key_metric}",
        f"workers: {report.workers}; wall time: {format_duration(report.wall_s)}",
        *notes(report),
        f"git commit: {report.git_commit or '-'}; "
        f"created: {datetime.fromtimestamp(report.created, UTC).isoformat(timespec='seconds')}",
    ]
    parts = [
        "# Multi-run bench",
        "\n".join(f"- {line}" for line in head),
        "## Runs needed",
        multi_table(report),
        "## Each run against the oracle (median over seeds; seeds within)",
        runs_table(report, MEMORY_POLICIES),
        "## Each trial's best so far against the oracle (median over seeds; seeds within)",
        runs_table(report, [p for p in report.policies if p not in MEMORY_POLICIES]),
        "## Sequences",
        _table(
            ["task", "policy", "seed", "needed", "finals (vs oracle)", "memory runs", "changes"],
            [_sequence_row(s) for s in report.sequences],
            left=2,
        ),
    ]
    return "\n\n".join(parts) + "\n"


def _sequence_row(seq: MultiSequence) -> list[object]:
    finals = "; ".join(f"{_num(s.final)} ({_gap(s.vs_oracle)})" for s in seq.steps)
    memory = ", ".join("-" if s.memory_runs is None else str(s.memory_runs) for s in seq.steps)
    changes = ", ".join(str(len(s.interventions)) for s in seq.steps)
    searched = seq.policy not in MEMORY_POLICIES
    return [
        seq.task,
        seq.policy,
        seq.seed,
        _needed(seq.needed, seq.budget),
        finals,
        "-" if searched else memory,
        "-" if searched else changes,
    ]


def _cell(report: MultiReport, task: str, policy: str) -> MultiCell | None:
    return next((c for c in report.cells if c.task == task and c.policy == policy), None)


def _needed(value: int | None, budget: int) -> str:
    return f">{budget}" if value is None else str(value)


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"
