"""A diagnosis: what a detector (or the LLM analyst) found wrong with a run, with evidence.

Diagnoses cross process boundaries (decision records, the review queue, the LLM prompt), so
they are pydantic models with JSON-able fields only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DiagnosisKind = Literal[
    "plateau", "divergence", "overfitting", "oscillation", "imbalance", "recall"
]
"""``imbalance``: one weighted loss term dominates the total (``detectors._imbalance``).
``recall``: no detector's finding, but memory's: earlier runs of this task needed a change
early on (``autopilot.remember.RunMemory.start_plan``); its evidence holds ``x:<knob>``
factors."""
RECALL_PREFIX = "x:"
"""A ``recall`` diagnosis's evidence key for a knob's factor: ``x:lr`` -> 0.3."""
Severity = Literal["low", "medium", "high"]
Evidence = dict[str, float | int | str | bool | None]


class Diagnosis(BaseModel):
    """One problem found at ``step``: its kind, the metric that shows it, and the numbers.

    Example:
        >>> Diagnosis(kind="plateau", metric="val/loss", step=900,
        ...           message="val/loss has not improved for 400 steps").kind
        'plateau'
    """

    model_config = ConfigDict(extra="forbid")

    kind: DiagnosisKind
    metric: str
    step: int
    severity: Severity = "medium"
    message: str = Field(max_length=1000)
    evidence: Evidence = Field(default_factory=dict)
    episode: str | None = None
    """The episode this diagnosis belongs to (``autopilot.episodes``): one problem, from its
    onset until it resolves or is acted on; every diagnosis of one episode carries its id."""
    onset_step: int | None = None
    """The step the episode opened (the first tick that found it)."""
