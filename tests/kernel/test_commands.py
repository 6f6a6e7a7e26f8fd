"""Commands: parsing with clear reasons, their short form, and appending them to a run."""

from __future__ import annotations

import json

import pytest

from kernel import Command, CommandError, KernelError, append_command, parse_command_line
from kernel.commands import new_command_id


def _line(**fields) -> str:
    return json.dumps({"id": "c1", "source": "human", **fields})


# -- valid ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"knob": "lr", "value": 1e-4}, {"op": "set", "value": 1e-4}),
        ({"knob": "lr", "value": 3}, {"value": 3.0}),
        ({"knob": "lr", "multiplier": 0.5}, {"multiplier": 0.5, "value": None}),
        ({"knob": "lr", "value": [0.1, 0.2]}, {"value": [0.1, 0.2]}),
        ({"knob": "loss.aux", "value": False}, {"value": False}),
        ({"op": "stop"}, {"op": "stop", "knob": None}),
        ({"op": "checkpoint", "apply_at_step": 7}, {"apply_at_step": 7}),
        (
            {"knob": "lr", "value": 0.1, "reason": "plateau", "proposal_id": "p9"},
            {"reason": "plateau"},
        ),
    ],
)
def test_valid_lines_parse(fields, expected):
    cmd = parse_command_line(_line(**fields))
    for name, value in expected.items():
        assert getattr(cmd, name) == value


def test_an_integer_value_becomes_a_float_but_true_stays_a_bool():
    assert type(parse_command_line(_line(knob="lr", value=1)).value) is float
    assert parse_command_line(_line(knob="t", value=True)).value is True


# -- invalid -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("lr=0.1", ["not valid JSON"]),
        ("", ["not valid JSON"]),
        ('[{"id": "c1"}]', ["must be a JSON object", "list"]),
        ("3.5", ["must be a JSON object", "float"]),
        ('{"id": 5, "source": "human", "op": "stop"}', ["id:", "got 5"]),
        (_line(knob="lr", value="0.1"), ["value:", "finite number", "'0.1'"]),
        ('{"id": "c1", "source": "human", "knob": "lr", "value": NaN}', ["value:", "nan"]),
        ('{"id": "c1", "source": "human", "knob": "lr", "value": Infinity}', ["value:", "inf"]),
        (_line(knob="lr", value=[]), ["value:"]),
        (json.dumps({"id": "c1", "source": "bob", "op": "stop"}), ["source:", "'bob'"]),
        (json.dumps({"id": "c1", "source": "human", "value": 0.1}), ["needs a knob"]),
        (_line(knob="lr", value=0.1, multiplier=2.0), ["exactly one of value or multiplier"]),
        (_line(knob="lr"), ["exactly one of value or multiplier"]),
        (_line(op="stop", value=1.0), ["op 'stop' takes no knob, value or multiplier"]),
        (_line(op="pause", knob="lr"), ["op 'pause' takes no knob"]),
        (_line(op="explode"), ["op:", "'explode'"]),
        (_line(knob="lr", multiplier=-2.0), ["multiplier:", "greater than 0"]),
        (_line(knob="lr", multiplier=True), ["multiplier:"]),
        (_line(knob="lr", value=0.1, apply_at_step=-1), ["apply_at_step:", "-1"]),
        (_line(knob="lr", value=0.1, colour="red"), ["colour:", "'red'"]),
        (json.dumps({"source": "human", "op": "stop"}), ["id:", "required"]),
        (json.dumps({"id": "", "source": "human", "op": "stop"}), ["id:"]),
    ],
)
def test_invalid_lines_are_refused_with_a_reason(text, fragments):
    with pytest.raises(CommandError) as info:
        parse_command_line(text)
    reason = info.value.reason
    assert "\n" not in reason
    for fragment in fragments:
        assert fragment in reason


def test_a_reason_names_at_most_three_fields_and_counts_the_rest():
    text = json.dumps({"id": 1, "source": 2, "op": 3, "knob": 4, "value": "x", "reason": 5})
    with pytest.raises(CommandError) as info:
        parse_command_line(text)
    assert info.value.reason.count(": ") == 3
    assert info.value.reason.endswith("more")


def test_command_error_is_a_kernel_error():
    assert issubclass(CommandError, KernelError)


def test_a_bad_command_object_is_refused_at_construction():
    with pytest.raises(ValueError, match="exactly one of value or multiplier"):
        Command(id="c1", source="human", knob="lr")


# -- describe ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"knob": "lr", "value": 0.0001}, "lr=0.0001"),
        ({"knob": "lr", "multiplier": 0.5}, "lr x0.5"),
        ({"knob": "loss.aux", "value": False}, "loss.aux=false"),
        ({"knob": "lr", "value": [0.001, 0.0001]}, "lr=[0.001, 0.0001]"),
        ({"op": "stop"}, "stop"),
        ({"op": "checkpoint"}, "checkpoint"),
    ],
)
def test_describe(fields, text):
    assert Command(id="c1", source="human", **fields).describe() == text


# -- appending -----------------------------------------------------------------------


def test_append_command_writes_one_line_with_created_at(run_dir):
    first = append_command(run_dir, Command(id="a", source="ai", knob="lr", value=0.1))
    second = append_command(run_dir, Command(id="b", source="rules", op="stop"))
    data = (run_dir / "commands.jsonl").read_bytes()
    lines = data.decode().split("\n")
    assert lines[-1] == ""  # every line ends with its newline
    assert [first, second] == [0, len(lines[0]) + 1]
    parsed = [parse_command_line(line) for line in lines[:-1]]
    assert [c.id for c in parsed] == ["a", "b"]
    assert all(isinstance(c.created_at, float) for c in parsed)


def test_append_command_keeps_a_given_created_at(run_dir):
    append_command(run_dir, Command(id="a", source="ai", op="stop", created_at=12.5))
    line = (run_dir / "commands.jsonl").read_text().strip()
    assert parse_command_line(line).created_at == 12.5


def test_new_command_ids_are_unique_and_prefixed():
    ids = {new_command_id("ai") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("ai-") for i in ids)
