"""One summary of a pydantic ValidationError for every boundary: commands, settings, LLM
replies, recorded runs."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kernel.validation import summarize_validation_error


class Event(BaseModel):
    kind: Literal["plateau", "divergence"]
    onset_step: int = Field(ge=0)


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event]
    value: float | bool | list[float] = 0.0


def _error(raw: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Labels.model_validate(raw)
    return caught.value


def test_each_bad_field_is_named_with_the_rule_and_the_value_given() -> None:
    exc = _error({"events": [{"kind": "blowup", "onset_step": -1}]})
    text = summarize_validation_error(exc)
    kind = "events[0].kind: Input should be 'plateau' or 'divergence', got 'blowup'"
    assert text.startswith(kind)
    assert "; events[0].onset_step: Input should be greater than or equal to 0, got -1" in text


def test_a_missing_field_says_so_without_echoing_its_parent() -> None:
    assert summarize_validation_error(_error({})) == "events: Field required"


def test_errors_past_the_limit_are_counted() -> None:
    events = [{"kind": "x", "onset_step": 0}] * 5
    text = summarize_validation_error(_error({"events": events}), limit=2)
    assert text.count("events[") == 2 and text.endswith("; and 3 more")


def test_messages_can_be_replaced_by_error_type() -> None:
    exc = _error({"events": [], "lr": 1})
    text = summarize_validation_error(exc, types={"extra_forbidden": "unknown setting"})
    assert text == "lr: unknown setting, got 1"


def test_a_union_field_gets_one_message_instead_of_one_per_member() -> None:
    exc = _error({"events": [], "value": "high"})
    plain = summarize_validation_error(exc)
    assert plain.count("value") >= 2  # pydantic reports each member of the union
    text = summarize_validation_error(
        exc, depth=1, fields={"value": "must be a number, true/false or a list of numbers"}
    )
    assert text == "value: must be a number, true/false or a list of numbers, got 'high'"


def test_a_long_value_is_shortened_and_a_value_error_prefix_dropped() -> None:
    class Knob(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _lr(cls, name: str) -> str:
            if name != "lr":
                raise ValueError("must be lr")
            return name

    with pytest.raises(ValidationError) as caught:
        Knob.model_validate({"name": "momentum"})
    assert summarize_validation_error(caught.value) == "name: must be lr, got 'momentum'"
    with pytest.raises(ValidationError) as caught:
        Labels.model_validate({"events": "e" * 200})
    text = summarize_validation_error(caught.value)
    assert len(text) < 150 and "..." in text
