"""What the LLM agents must answer: pydantic models with strict field constraints.

The client validates every reply against one of these; a reply that does not fit gets one
repair request, then the call fails. Extra fields are errors, so a model that invents a
field (``"lr": 0.1`` beside ``actions``) is told so instead of being half-understood.

Example:
    >>> AnalystOutput.model_validate_json(
    ...     '{"kind": "plateau", "metric": "val/loss", "summary": "flat for 400 steps",'
    ...     ' "evidence": ["slope -1e-5"], "confidence": 0.8}').kind
    'plateau'
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernel import KnobValue

AnalystKind = Literal["plateau", "divergence", "overfitting", "oscillation", "healthy", "other"]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AnalystOutput(_Output):
    """The analyst's reading of the run: one diagnosis, with the numbers that show it."""

    kind: AnalystKind
    metric: str | None = Field(default=None, max_length=200)
    """The metric that shows the problem (``None`` for ``healthy``)."""
    summary: str = Field(min_length=1, max_length=1000)
    evidence: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=8
    )
    """Short facts with numbers, e.g. ``"val/loss best 0.41 at step 1200, 600 steps ago"``."""
    confidence: float = Field(ge=0.0, le=1.0)

    def describe(self) -> str:
        """``plateau on val/loss: flat for 400 steps`` (what the planner reads)."""
        where = f" on {self.metric}" if self.metric else ""
        return f"{self.kind}{where}: {self.summary}"


class PlannedAction(_Output):
    """One knob change: an absolute ``value`` or a ``multiplier`` of the current value."""

    knob: str = Field(min_length=1, max_length=200)
    value: KnobValue | None = None
    multiplier: float | None = Field(default=None, gt=0)
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> PlannedAction:
        if (self.value is None) == (self.multiplier is None):
            raise ValueError(
                f"action on {self.knob!r} needs exactly one of 'value' or 'multiplier'"
            )
        return self


class PlannerOutput(_Output):
    """The planner's answer: the changes to make (possibly none) and when to look again."""

    actions: list[PlannedAction] = Field(default_factory=list, max_length=8)
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str = Field(default="", max_length=2000)
    look_again_steps: int | None = Field(default=None, ge=0, le=1_000_000)
