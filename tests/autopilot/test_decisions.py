"""Decision records: appended, read back with their effects, torn lines skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _runs import mul, proposal

from autopilot.decisions import DecisionLog, DecisionRecord, EffectRecord, parse_record
from autopilot.diagnoses import Diagnosis
from autopilot.guards import Verdict
from autopilot.tokens import Usage


def decision(id: str = "d1000-abc", **kw) -> DecisionRecord:
    fields: dict[str, Any] = {
        "id": id,
        "step": 1000,
        "mode": "ai_auto",
        "summary_hash": "abc123",
        "diagnoses": [
            Diagnosis(kind="plateau", metric="val/loss", step=1000, message="flat for 400 steps")
        ],
        "proposer": "ai",
        "prompt_version": "planner-v1",
        "usage": Usage(tokens_in=1200, tokens_out=150, calls=2, cost_usd=0.0003),
        "proposal": proposal(mul("lr", 0.5)),
        "verdicts": [
            Verdict(
                index=0,
                knob="lr",
                status="allowed",
                requested=mul("lr", 0.5),
                value=0.05,
                before=0.1,
                reason="lr 0.1 -> 0.05",
            )
        ],
        "route": "kernel",
        "command_ids": [f"ai-{id}-0"],
        "proposal_id": id,
    }
    return DecisionRecord(**(fields | kw))


def effect(decision_id: str = "d1000-abc", **kw) -> EffectRecord:
    fields: dict[str, Any] = {
        "decision_id": decision_id,
        "command_id": f"ai-{decision_id}-0",
        "knob": "lr",
        "applied_step": 1001,
        "horizon_steps": 100,
        "key_metric": "val/loss",
        "projected": 0.5,
        "observed": 0.48,
        "change_rel": 0.04,
        "verdict": "better",
        "measured_at_step": 1101,
    }
    return EffectRecord(**(fields | kw))


def test_records_round_trip_and_effects_are_joined(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append(decision())
    log.append(decision("d1200-def", route="none", command_ids=[]))
    log.append(effect())
    views = log.read()
    assert [v.record.id for v in views] == ["d1000-abc", "d1200-def"]
    assert views[0].record == decision().model_copy(update={"time": views[0].record.time})
    assert [e.verdict for e in views[0].effects] == ["better"] and views[1].effects == []
    assert (tmp_path / "autopilot" / "decisions.jsonl").is_file()


def test_ids_see_what_another_writer_appended(tmp_path: Path) -> None:
    reader, writer = DecisionLog(tmp_path), DecisionLog(tmp_path)
    assert reader.ids() == set()
    writer.append(decision())
    assert reader.ids() == {"d1000-abc"}
    writer.append(decision("d2"))
    assert reader.ids() == {"d1000-abc", "d2"}
    assert reader.has("d2") and not reader.has("d3")


def test_torn_and_invalid_lines_are_skipped(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append(decision())
    path = tmp_path / "autopilot" / "decisions.jsonl"
    with path.open("a") as f:
        f.write('{"record": "decision", "id": 7}\n')  # invalid
        f.write('{"record": "effect", "decision_')  # a writer died mid-line
    assert log.ids() == {"d1000-abc"}
    log.append(decision("d2"))  # the torn fragment is closed first, then skipped
    assert [v.record.id for v in DecisionLog(tmp_path).read()] == ["d1000-abc", "d2"]
    assert log.ids() == {"d1000-abc", "d2"}


def test_crafted_lines_are_reported_once_with_their_line_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(tmp_path)
    log.append(decision())
    path = tmp_path / "autopilot" / "decisions.jsonl"
    crafted = effect().model_dump() | {"change_rel": "abc"}
    with path.open("a") as f:
        f.write("\n\n" + json.dumps(crafted) + "\n")  # line 4, after two blank lines
    with caplog.at_level(logging.WARNING):
        assert log.ids() == {"d1000-abc"}
        log.append(effect())
        assert [len(v.effects) for v in log.read()] == [1]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"{path}:4 " in warned[0] and "change_rel" in warned[0]


def test_a_repeated_id_keeps_the_first_record(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append(decision(note="first"))
    log.append(decision(note="second"))
    assert [v.record.note for v in log.read()] == ["first"]


def test_an_effect_without_its_decision_is_not_shown(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.append(effect("d-unknown"))
    log.append(decision())
    assert [len(v.effects) for v in log.read()] == [0]


def test_parse_record_tells_the_kinds_apart() -> None:
    assert isinstance(parse_record(decision().model_dump_json()), DecisionRecord)
    assert isinstance(parse_record(effect(rolled_back=True).model_dump_json()), EffectRecord)


OLD_LINE = (
    '{"record": "decision", "id": "d1000-abc", "step": 1000, "time": 1700000000.0, '
    '"mode": "ai_auto", "summary_hash": "abc123", "diagnoses": [], "proposer": "ai", '
    '"prompt_version": "analyst-v1+planner-v1", "fallback_reason": null, "tokens_in": 1200, '
    '"tokens_out": 150, "cost_usd": 0.0003, "proposal": {"proposer": "ai", "diagnosis": '
    '"flat", "kind": "plateau", "actions": [{"knob": "lr", "value": null, "multiplier": 0.5, '
    '"reason": "", "rolls_back": null}], "confidence": 0.9, "reasoning": "", '
    '"look_again_steps": null, "prompt_version": "analyst-v1+planner-v1", "tokens_in": 1200, '
    '"tokens_out": 150, "cost_usd": 0.0003, "fallback_reason": null, "provider_note": null}, '
    '"verdicts": [], "route": "none", "command_ids": [], "proposal_id": null, "note": null}'
)
"""A decision line as written before records had a ``usage`` (flat tokens and cost)."""


def test_a_line_written_before_usage_is_read_into_usage(tmp_path: Path) -> None:
    path = tmp_path / "autopilot" / "decisions.jsonl"
    path.parent.mkdir()
    path.write_text(OLD_LINE + "\n")
    [view] = DecisionLog(tmp_path).read()
    old = Usage(tokens_in=1200, tokens_out=150, cost_usd=0.0003)
    assert view.record.usage == old
    assert view.record.proposal is not None and view.record.proposal.usage == old
    assert parse_record(view.record.model_dump_json()) == view.record  # written back new
