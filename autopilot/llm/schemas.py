"""What the LLM agents must answer: pydantic models with strict field constraints.

The client validates every reply against one of these; a reply that does not fit gets one
repair request, then the call fails. Extra fields are errors, so a model that invents a
field (``"lr": 0.1`` beside ``actions``) is told so instead of being half-understood.

``model_json_schema()`` of these models is the schema sent to the provider. It carries every
value range pydantic enforces on the reply (shape, types, enums, numeric ranges, item
counts), so a provider that constrains decoding by the schema's ranges (OpenAI's structured
outputs, vLLM) cannot produce a ``confidence`` of 1.637 or a ``look_again_steps`` of -2
that validation would then refuse. llama-cpp-python 0.3.36's grammar bounds integers but
not numbers: SmolLM2-135M answered ``"confidence": 2`` and ``4`` under it, so the prompts
still say ``<0-1>``. Titles, descriptions, defaults, string lengths and
``additionalProperties`` are left out (see ``_SENT_KEYWORDS``); pydantic still enforces all
of them on the reply.

Example:
    >>> AnalystOutput.model_validate_json(
    ...     '{"kind": "plateau", "metric": "val/loss", "summary": "flat for 400 steps",'
    ...     ' "evidence": ["slope -1e-5"], "confidence": 0.8}').kind
    'plateau'
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import (
    DEFAULT_REF_TEMPLATE,
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
)
from pydantic_core import CoreSchema

from kernel import KnobValue

AnalystKind = Literal[
    "plateau", "divergence", "overfitting", "oscillation", "imbalance", "healthy", "other"
]


_SENT_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "properties",
        "required",
        "items",
        "anyOf",
        # the ranges pydantic enforces, so that a provider's grammar enforces them too
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)
"""Schema keywords sent; every token of them is billed as prompt by some providers. Not
sent: titles, descriptions and defaults (not worth their tokens); string lengths: llama.cpp
turns a ``maxLength`` into a nested repetition, and the planner's (2000 characters of
reasoning) exceeded its grammar parser's limits, which failed the request (measured with
llama-cpp-python 0.3.36); and ``additionalProperties: false``, which the grammar builders
assume already (llama.cpp, xgrammar in its default strict mode). Validation still checks
all of them. Redundant parts are left out too: a ``type`` beside an ``enum``, ``null`` in
the type of a field that may be left out anyway, ``.0`` of a whole-number bound."""


class _CompactSchema(GenerateJsonSchema):
    """Pydantic's schema reduced to ``_SENT_KEYWORDS``, references inlined, and a nullable
    ``anyOf`` folded into a type list (``{"type": ["string", "null"]}``)."""

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        full = super().generate(schema, mode)
        return _compact(full, full.get("$defs", {}))


def _compact(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_compact(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _compact(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":  # field names, not keywords: keep every one
            optional = set(value) - set(node.get("required", []))
            kept[key] = {
                name: _optional(_compact(field, defs))
                if name in optional
                else _compact(field, defs)
                for name, field in value.items()
            }
        elif key in _SENT_KEYWORDS:
            kept[key] = _whole(_compact(value, defs))
    if "enum" in kept:
        kept.pop("type", None)  # the enum's values say it
    return _fold_any_of(kept)


def _optional(field: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without ``null``: leaving it out says "none" for free."""
    types = field.get("type")
    if not isinstance(types, list) or "null" not in types or len(types) < 2:
        return field
    rest = [t for t in types if t != "null"]
    return {**field, "type": rest[0] if len(rest) == 1 else rest}


def _whole(value: Any) -> Any:
    """``1`` for ``1.0``: a bound's ``.0`` costs two tokens and says nothing."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _fold_any_of(node: dict[str, Any]) -> dict[str, Any]:
    branches = node.get("anyOf")
    if not branches or not all(isinstance(b.get("type"), str) for b in branches):
        return node
    extras = [key for b in branches for key in b if key != "type"]
    if len(extras) != len(set(extras)):
        return node  # two branches constrain the same keyword: keep them apart
    folded: dict[str, Any] = {"type": [b["type"] for b in branches]}
    for b in branches:
        folded.update((k, v) for k, v in b.items() if k != "type")
    return {**{k: v for k, v in node.items() if k != "anyOf"}, **folded}


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = None,
        ref_template: str = DEFAULT_REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = _CompactSchema,
        mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The compact schema sent to the provider (see the module docstring)."""
        return super().model_json_schema(by_alias, ref_template, schema_generator, mode, **kwargs)


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

    actions: list[PlannedAction] = Field(max_length=8)
    rewind: Literal["none", "last", "best"] = "none"
    """Restore a kept snapshot (the newest, or the one with the best key metric) before the
    actions apply: what a network whose progress is lost needs."""
    """Required (``[]`` for none), so that a grammar-constrained model must decide: when
    it was optional, SmolLM2-135M under llama.cpp's grammar answered ``{"confidence": 0.5}``."""
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str = Field(default="", max_length=2000)
    look_again_steps: int | None = Field(default=None, ge=0, le=1_000_000)


ValueType = Literal["boolean", "number", "array"]
"""The JSON type of a knob's value: a toggle, a number, one number per param group."""
ALL_VALUE_TYPES: tuple[ValueType, ...] = ("boolean", "number", "array")


@functools.lru_cache(maxsize=64)
def planner_output_for(
    knobs: tuple[str, ...], value_types: tuple[ValueType, ...] = ALL_VALUE_TYPES
) -> type[PlannerOutput]:
    """``PlannerOutput`` whose schema, as sent, lists this run's ``knobs`` as the ``enum`` of
    ``knob``, so a grammar-constrained provider can only name a knob that exists
    (SmolLM2-135M under llama.cpp wrote ``",lr: -1.5,weight_decay:}, {"`` as a knob name),
    and allows a ``value`` only of the ``value_types`` the run's knobs take (a run without
    toggles or param groups: numbers only). Validation stays as lenient as
    ``PlannerOutput``'s: a provider without a grammar that names another knob still gets
    its other actions judged, and the guards reject that one with the run's knobs listed.

    Example:
        >>> schema = planner_output_for(("lr", "weight_decay"), ("number",)).model_json_schema()
        >>> action = schema["properties"]["actions"]["items"]["properties"]
        >>> action["knob"], action["value"]
        ({'enum': ['lr', 'weight_decay']}, {'type': 'number'})
    """
    if not knobs:
        return PlannerOutput
    names = list(knobs)
    types = [t for t in ALL_VALUE_TYPES if t in value_types] or list(ALL_VALUE_TYPES)

    class RunPlannerOutput(PlannerOutput):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            schema = super().model_json_schema(*args, **kwargs)
            action = schema["properties"]["actions"]["items"]["properties"]
            action["knob"] = {"enum": names}
            action["value"] = _value_schema(action["value"], types)
            return schema

    RunPlannerOutput.__name__ = RunPlannerOutput.__qualname__ = "PlannerOutput"
    return RunPlannerOutput


def _value_schema(full: dict[str, Any], types: list[ValueType]) -> dict[str, Any]:
    """``value``'s schema narrowed to ``types`` (the array's item rules only with arrays)."""
    if "array" not in types:
        full = {k: v for k, v in full.items() if k not in ("items", "minItems")}
    return {**full, "type": types[0] if len(types) == 1 else types}
