"""Decision records: what the autopilot decided at each tick, why, and what came of it.

``RUN_DIR/autopilot/decisions.jsonl`` is append-only. A ``decision`` line records one tick's
inputs (diagnoses, the summary's hash), the proposal with its token usage and cost, the guards'
verdicts, where it went (the kernel, the review queue, nowhere) and the command ids it sent.
An ``effect`` line, written later, records the measured effect of one applied command over
its horizon and whether it was rolled back. ``DecisionLog.read`` joins the two.

Example:
    >>> import tempfile
    >>> log = DecisionLog(tempfile.mkdtemp())
    >>> log.append(DecisionRecord(id="d-1", step=300, mode="suggest", route="none"))
    >>> [v.record.id for v in log.read()], "d-1" in log.ids()
    (['d-1'], True)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from autopilot.config import Mode
from autopilot.diagnoses import Diagnosis
from autopilot.guards import Verdict
from autopilot.llm_calls import LLMCall
from autopilot.proposals import Proposal, Proposer
from autopilot.tokens import Usage, fold_flat_usage
from kernel.jsonl import JsonlTail, append_line
from kernel.state import AUTOPILOT_DIR
from kernel.untrusted import LineNumbers, report_invalid
from kernel.validation import summarize_validation_error
from memory.records import Verdict as EffectVerdict

logger = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"
Route = Literal["kernel", "review", "none"]
"""Where a decision went: the kernel (auto modes), the review queue (suggest), nowhere."""


class DecisionRecord(BaseModel):
    """One tick's decision: inputs, proposal, verdicts, route and the commands sent."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    record: Literal["decision"] = "decision"
    id: str = Field(min_length=1, max_length=200)
    step: int
    time: float = Field(default_factory=time.time)
    mode: Mode
    summary_hash: str | None = None
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    proposer: Proposer | None = None
    prompt_version: str | None = None
    fallback_reason: str | None = None
    urgent: bool = False
    """The rules answered an urgent diagnosis at once (not an LLM failure)."""
    """Why the LLM was not used although the mode asked for it (never a silent fallback)."""
    usage: Usage = Field(default_factory=Usage)
    """What the LLM calls of this decision consumed and cost (the proposal's usage)."""
    proposal: Proposal | None = None
    verdicts: list[Verdict] = Field(default_factory=list)
    route: Route = "none"
    command_ids: list[str] = Field(default_factory=list)
    proposal_id: str | None = None
    """The review item's id (route ``review``) or the commands' ``proposal_id`` (``kernel``)."""
    note: str | None = None
    llm_call: LLMCall | None = None
    """The LLM call outside the tick that this decision answers or records (its step, what
    became of it), in the AI modes."""

    @model_validator(mode="before")
    @classmethod
    def _flat_usage(cls, data: Any) -> Any:
        return fold_flat_usage(data)  # lines written before records had a usage


class EffectRecord(BaseModel):
    """The measured effect of one applied command of a decision."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    record: Literal["effect"] = "effect"
    decision_id: str
    command_id: str
    knob: str
    applied_step: int
    horizon_steps: int = Field(ge=1)
    key_metric: str
    projected: float
    """Where the key metric was heading without the change (the trend before it)."""
    observed: float | None
    """The mean of the key metric after the change; None when it was not finite."""
    change_rel: float
    """``observed`` against ``projected``, signed so that positive is better."""
    verdict: EffectVerdict
    rolled_back: bool = False
    rollback_command_id: str | None = None
    measured_at_step: int
    time: float = Field(default_factory=time.time)


class DecisionView(BaseModel):
    """A decision with the effects measured for its commands, in the order they were written."""

    record: DecisionRecord
    effects: list[EffectRecord] = Field(default_factory=list)


_LINE: TypeAdapter[DecisionRecord | EffectRecord] = TypeAdapter(
    Annotated[DecisionRecord | EffectRecord, Field(discriminator="record")]
)


def parse_record(text: str) -> DecisionRecord | EffectRecord:
    """One line of ``decisions.jsonl`` as a record.

    Raises:
        ValidationError: when the line is not a decision or effect record.
    """
    return _LINE.validate_json(text)


class DecisionLog:
    """Appends to and reads a run's ``autopilot/decisions.jsonl``.

    Reading is incremental: each call parses only the lines appended since the last one, so
    ``ids()`` stays cheap on every tick. The file is untrusted input: an invalid line is
    skipped and reported once, with its line number; a torn last line waits for its newline.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / AUTOPILOT_DIR / DECISIONS_FILE
        self._tail = JsonlTail(self.path)
        self._lines = LineNumbers(self.path)
        self._decisions: dict[str, DecisionRecord] = {}
        self._effects: dict[str, list[EffectRecord]] = {}
        self._improved: set[str] = set()
        self._verdicts: dict[str, EffectVerdict] = {}
        self._worse: set[str] = set()
        self._lock = threading.Lock()

    def append(self, record: DecisionRecord | EffectRecord) -> None:
        """Append one record as a line (safe from several processes at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, record.model_dump_json())

    def read(self) -> list[DecisionView]:
        """Every decision, oldest first, with its effects joined."""
        with self._lock:
            self._refresh()
            return [
                DecisionView(record=r, effects=list(self._effects.get(r.id, ())))
                for r in self._decisions.values()
            ]

    def ids(self) -> set[str]:
        """The ids of the decisions written so far."""
        with self._lock:
            self._refresh()
            return set(self._decisions)

    def has(self, decision_id: str) -> bool:
        """Whether ``decision_id`` was written (a re-run tick checks its id here, without
        copying every id of a long run)."""
        with self._lock:
            self._refresh()
            return decision_id in self._decisions

    def decision(self, decision_id: str) -> DecisionRecord | None:
        """The decision ``decision_id`` as first written (None: not written)."""
        with self._lock:
            self._refresh()
            return self._decisions.get(decision_id)

    def improved_commands(self) -> frozenset[str]:
        """Ids of the commands whose measured effect was ``better`` (read incrementally)."""
        with self._lock:
            self._refresh()
            return frozenset(self._improved)

    def verdicts(self) -> dict[str, EffectVerdict]:
        """The latest measured verdict of each command, by command id (read incrementally)."""
        with self._lock:
            self._refresh()
            return dict(self._verdicts)

    def worse_commands(self) -> frozenset[str]:
        """Ids of the commands whose measured effect was ``worse`` (read incrementally)."""
        with self._lock:
            self._refresh()
            return frozenset(self._worse)

    def _refresh(self) -> None:
        for offset, line in self._tail.read_new():
            try:
                record = parse_record(line)
            except ValidationError as exc:
                why = summarize_validation_error(exc, limit=1)
                report_invalid(self.path, self._lines.at(offset), line, why)
                continue
            if isinstance(record, EffectRecord):
                self._effects.setdefault(record.decision_id, []).append(record)
                self._verdicts[record.command_id] = record.verdict
                if record.verdict == "better":
                    self._improved.add(record.command_id)
                elif record.verdict == "worse":
                    self._worse.add(record.command_id)
            else:
                self._decisions.setdefault(record.id, record)  # a repeated id keeps the first
