"""Proposals: the bounded changes a policy (rules, the LLM agent, Optuna) suggests for a run.

An ``Action`` names a knob and either an absolute ``value`` or a ``multiplier`` of the knob's
current value. A ``Proposal`` is what a policy returns for one decision; the guards turn its
actions into verdicts and commands. Both cross boundaries (the LLM's output, decision
records, the review queue), so they are pydantic models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopilot.tokens import Usage, fold_flat_usage
from kernel import KnobValue
from kernel.commands import RewindTo

Proposer = Literal["rules", "ai", "tune", "human"]
REWIND = "rewind"
"""The ``knob`` label of a rewind action (``op="rewind"``), which moves no single knob."""


class Action(BaseModel):
    """Change one knob: to ``value``, or by ``multiplier`` times its current value; or, with
    ``op="rewind"``, restore a snapshot the kernel keeps (``to``: ``last``, ``best`` or
    ``step`` with ``to_step``). Actions apply in order at one safe point, so a rewind first
    and then ``lr x0.5`` halves the restored lr.

    Example:
        >>> Action.rewind("best", reason="progress lost").describe()
        'rewind to best'
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    knob: str = Field(min_length=1, max_length=200)
    op: Literal["set", "rewind"] = "set"
    to: RewindTo | None = None
    to_step: int | None = Field(default=None, ge=0)
    value: KnobValue | None = None
    multiplier: float | None = Field(default=None, gt=0)
    reason: str = Field(default="", max_length=1000)
    restores: bool = False
    """The ``value`` is one the run itself trained at (its logged lr before a collapse): the
    guards check it against the largest value the run logged for the knob and, within it,
    waive ``guards.max_up`` (restoring a known value is not a leap into the unknown)."""
    rolls_back: str | None = Field(default=None, min_length=1, max_length=200)
    """The id of the command whose change this action undoes (a rollback), if any: the
    command sent for it carries ``intent="rollback"``."""

    @model_validator(mode="after")
    def _one_of(self) -> Action:
        if self.op == "rewind":
            if self.knob != REWIND or self.value is not None or self.multiplier is not None:
                raise ValueError(f"a rewind action has knob {REWIND!r} and no value or multiplier")
            if (self.to == "step") != (self.to_step is not None):
                raise ValueError("a rewind to a step needs to='step' and to_step, and only then")
            return self
        if (self.value is None) == (self.multiplier is None):
            raise ValueError(f"action on {self.knob!r} needs exactly one of value or multiplier")
        return self

    @classmethod
    def rewind(
        cls, to: RewindTo = "last", *, to_step: int | None = None, reason: str = ""
    ) -> Action:
        return cls(knob=REWIND, op="rewind", to=to, to_step=to_step, reason=reason)

    def describe(self) -> str:
        """``lr x0.5``, ``weight_decay=0.0001`` or ``rewind to best``."""
        if self.op == "rewind":
            return f"rewind to step {self.to_step}" if self.to == "step" else f"rewind to {self.to}"
        if self.multiplier is not None:
            return f"{self.knob} x{self.multiplier:g}"
        from kernel import format_value

        return f"{self.knob}={format_value(self.value)}"


class Proposal(BaseModel):
    """What one policy proposes for one decision, and what it cost to get it."""

    model_config = ConfigDict(extra="forbid")

    proposer: Proposer
    diagnosis: str = Field(max_length=2000)
    kind: str | None = Field(default=None, max_length=40)
    """The kind of problem acted on: the first detector's, or the analyst's own (``healthy``
    when the analyst found nothing wrong). The offline replay scores these."""
    actions: list[Action] = Field(default_factory=list, max_length=20)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    reasoning: str = Field(default="", max_length=8000)
    look_again_steps: int | None = Field(default=None, ge=0)
    prompt_version: str | None = None
    usage: Usage = Field(default_factory=Usage)
    """What the LLM calls behind it consumed and cost (a rules fallback: the failed calls)."""
    fallback_reason: str | None = None
    """Set when this proposal comes from the rules because the LLM could not be used, or
    was not waited for (``urgent``)."""
    urgent: bool = False
    """The rules answered an urgent diagnosis at once, without waiting on the LLM: by
    design, not a failure of the LLM (``fallback_reason`` says which diagnosis)."""
    provider_note: str | None = Field(default=None, max_length=1000)
    """Set once per provider: it refused a response format, and which one is used now."""
    trial: int | None = Field(default=None, ge=0)
    """The online tuner's trial number in its task's study (proposer ``tune`` only)."""

    @model_validator(mode="before")
    @classmethod
    def _flat_usage(cls, data: Any) -> Any:
        return fold_flat_usage(data)  # decision records and review items written before usage
