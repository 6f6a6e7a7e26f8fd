"""What every policy sees.

A policy (``RulePolicy``, ``LLMPolicy``) turns a tick's diagnoses into a ``Proposal``. It
never sends anything: the guards check the proposal and the graph routes it.
``PolicyContext`` is everything a policy may use, assembled from what the tick read (knob
values come from ``kernel.json``, never a guess).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autopilot.diagnoses import Diagnosis
from kernel import KnobSpec, LedgerRow, SnapshotInfo
from memory.lessons import Lesson


@dataclass(frozen=True, kw_only=True)
class PastDecision:
    """A recent decision of this run, as the LLM reads it: what was done and what it did."""

    step: int
    diagnosis: str
    actions: list[str]
    """Applied changes as text, e.g. ``["lr x0.5"]``."""
    effect: str | None = None
    """The measured effect, e.g. ``"val/loss 12% better than projected"``; None until known."""
    decision_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyContext:
    """Everything a policy may use to propose changes at ``step``."""

    step: int
    mode: str
    key_metric: str
    key_mode: str
    diagnoses: list[Diagnosis]
    knobs: dict[str, KnobSpec]
    """The knobs the kernel published, with bounds already narrowed by the config."""
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    """The snapshots the kernel keeps (``kernel.json``), oldest first: what a rewind can name."""
    reflexes: list[dict[str, object]] = field(default_factory=list)
    """The kernel's latest reflex rewinds (step, snapshot_step, metric, cause, reason)."""
    summary_table: str = ""
    """The compressed metric summary as text (what the LLM reads)."""
    recent_changes: list[LedgerRow] = field(default_factory=list)
    """Applied ledger rows of knob changes, oldest first (any source)."""
    effects: dict[str, str] = field(default_factory=dict)
    """The measured verdict (``better``, ``neutral``, ``worse``) of the autopilot's commands
    measured so far, by command id (``EffectRecord.verdict``)."""
    past_decisions: list[PastDecision] = field(default_factory=list)
    memory_notes: str = ""
    """What memory says about earlier runs: one lesson per line (``Lesson.line``)."""
    lessons: list[Lesson] = field(default_factory=list)
    """The lessons of earlier runs for the first diagnosis's kind near this phase of the
    run, heaviest first (``autopilot.remember.RunMemory.lessons``): the rules' priors."""
