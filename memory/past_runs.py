"""What earlier runs say: the measured effects of the autopilot's changes in sibling runs.

Until the memory store exists this is a plain summary read from the decision records of the
run directories next to the current one (``RUN_DIR/../*/autopilot/decisions.jsonl``), e.g.::

    lr change for plateau: 3 measured (2 better, 1 neutral), median +4% vs projection

A sibling's files are untrusted input that ends up in the LLM's prompt, so the notes are
built from typed fields only: a diagnosis kind the caller knows, a knob name that matches
``kernel.untrusted.SAFE_NAME``, a verdict, a finite number. A line that does not validate is
skipped and reported once (file and line); no text from a sibling is ever copied.

Memory sits below the autopilot, so the autopilot passes the kinds it knows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from statistics import median
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, field_validator

from kernel.state import AUTOPILOT_DIR
from kernel.untrusted import SAFE_NAME, read_valid

DECISIONS = Path(AUTOPILOT_DIR) / "decisions.jsonl"
MAX_FILE_BYTES = 8 << 20
"""At most this much of each sibling's decision file is read."""
EffectVerdict = Literal["better", "neutral", "worse"]
"""What a measured effect says of a change (its one home; decision records use it)."""
UNKNOWN = "an unknown diagnosis"
"""The label of an effect whose decision was not read (or named a kind not known here)."""


class _Diagnosis(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str, info: ValidationInfo) -> str:
        kinds = (info.context or {}).get("kinds", ())
        if kind not in kinds:
            raise ValueError(f"kind must be one of {sorted(kinds)}")
        return kind


class _Decision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    record: Literal["decision"]
    id: str = Field(min_length=1, max_length=200)
    diagnoses: list[_Diagnosis] = Field(default_factory=list, max_length=20)


class _Effect(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    record: Literal["effect"]
    decision_id: str = Field(max_length=200)
    knob: str = Field(pattern=SAFE_NAME)
    change_rel: float
    verdict: EffectVerdict


class _Line(RootModel[Annotated[_Decision | _Effect, Field(discriminator="record")]]):
    pass


def past_run_notes(
    run_dir: str | Path, *, kinds: Collection[str], max_runs: int = 50, max_lines: int = 8
) -> str:
    """A few lines on what the autopilot's changes did in earlier runs beside ``run_dir``.

    Args:
        run_dir: the current run (its siblings are the directories beside it).
        kinds: the diagnosis kinds that may name a change's purpose.
        max_runs: the most recently changed siblings read.
        max_lines: the most measured (knob, kind) pairs shown.
    """
    outcomes: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for path in _siblings(Path(run_dir), max_runs):
        for label, verdict, change in _effects(path, frozenset(kinds)):
            outcomes[label].append((verdict, change))
    if not outcomes:
        return "no earlier runs with measured effects"
    ranked = sorted(outcomes.items(), key=lambda item: -len(item[1]))[:max_lines]
    return "\n".join(_line(label, found) for label, found in ranked)


def _siblings(run_dir: Path, max_runs: int) -> list[Path]:
    here = run_dir.resolve()
    found = []
    for path in here.parent.glob(f"*/{DECISIONS}"):
        try:
            if path.parents[1] != here and path.is_file():
                found.append((path.stat().st_mtime, path))
        except OSError:
            continue  # gone or unreadable since the glob
    return [path for _, path in sorted(found)[-max_runs:]]


def _effects(path: Path, kinds: frozenset[str]) -> list[tuple[str, EffectVerdict, float]]:
    decisions: dict[str, str] = {}
    found = []
    context = {"kinds": kinds}
    for _, line in read_valid(path, _Line, context=context, max_bytes=MAX_FILE_BYTES):
        record = line.root
        if isinstance(record, _Decision):
            decisions.setdefault(record.id, record.diagnoses[0].kind if record.diagnoses else "")
        else:
            kind = decisions.get(record.decision_id) or UNKNOWN
            found.append((f"{record.knob} change for {kind}", record.verdict, record.change_rel))
    return found


def _line(label: str, found: list[tuple[str, float]]) -> str:
    counts = {v: sum(1 for x, _ in found if x == v) for v in ("better", "neutral", "worse")}
    detail = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    med = median(c for _, c in found)
    return f"{label}: {len(found)} measured ({detail}), median {med:+.0%} vs projection"
