"""What earlier runs say: the measured effects of the autopilot's changes in sibling runs.

Until the memory store exists this is a plain summary read from the decision records of the
run directories next to the current one (``RUN_DIR/../*/autopilot/decisions.jsonl``), e.g.::

    lr x0.5 for plateau: 3 measured (2 better, 1 neutral), median +4% vs projection

It reads the files as JSON lines without importing the autopilot (memory sits below it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from kernel.state import AUTOPILOT_DIR

DECISIONS = Path(AUTOPILOT_DIR) / "decisions.jsonl"


def past_run_notes(run_dir: str | Path, *, max_runs: int = 50, max_lines: int = 8) -> str:
    """A few lines on what the autopilot's changes did in earlier runs beside ``run_dir``."""
    here = Path(run_dir).resolve()
    files = sorted(
        (p for p in here.parent.glob(f"*/{DECISIONS}") if p.parents[1] != here),
        key=lambda p: p.stat().st_mtime,
    )[-max_runs:]
    outcomes: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for path in files:
        for label, verdict, change in _effects(path):
            outcomes[label].append((verdict, change))
    if not outcomes:
        return "no earlier runs with measured effects"
    ranked = sorted(outcomes.items(), key=lambda item: -len(item[1]))[:max_lines]
    return "\n".join(_line(label, found) for label, found in ranked)


def _effects(path: Path) -> list[tuple[str, str, float]]:
    decisions: dict[str, str] = {}
    found = []
    for record in _records(path):
        if record.get("record") == "decision":
            kinds = [d.get("kind", "?") for d in record.get("diagnoses", [])]
            decisions[record.get("id", "")] = kinds[0] if kinds else "?"
        elif record.get("record") == "effect" and record.get("change_rel") is not None:
            kind = decisions.get(record.get("decision_id", ""), "?")
            label = f"{record.get('knob', '?')} change for {kind}"
            found.append((label, str(record.get("verdict")), float(record["change_rel"])))
    return found


def _records(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.split("\n"):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _line(label: str, found: list[tuple[str, float]]) -> str:
    counts = {v: sum(1 for x, _ in found if x == v) for v in ("better", "neutral", "worse")}
    detail = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    med = median(c for _, c in found)
    return f"{label}: {len(found)} measured ({detail}), median {med:+.0%} vs projection"
