"""The CLI's plain-text rendering: long text wraps between words and is never cut."""

from __future__ import annotations

from autopilot.cli._format import ledger_lines, table, wrap
from kernel import LedgerRow

LONG = (
    "rejected by the cooldown guard: lr changed at step 1200, the next change may come at "
    "step 1500 (cooldown_steps = 300); approve it again after that step"
)


def _words(lines: list[str]) -> list[str]:
    return " ".join(lines).split()


def test_wrap_breaks_between_words_and_keeps_every_word() -> None:
    lines = wrap(LONG, 40)
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
    assert _words(lines) == LONG.split()


def test_wrap_hangs_continuation_lines_under_the_prefix() -> None:
    lines = wrap(LONG, 50, prefix="  step 7: ")
    assert lines[0].startswith("  step 7: rejected")
    assert all(line.startswith(" " * 10) and line[10] != " " for line in lines[1:])
    assert _words(lines)[2:] == LONG.split()


def test_a_word_longer_than_the_width_stays_whole() -> None:
    word = "x" * 30
    assert wrap(f"a {word} b", 10) == ["a", word, "b"]


def test_wrap_of_empty_text_is_one_empty_line() -> None:
    assert wrap("", 10) == [""]
    assert wrap("", 10, prefix="> ") == ["> "]


def test_a_table_wraps_its_last_column_under_itself() -> None:
    lines = table(("id", "note"), [("a1", LONG), ("b22", "short")], wrap_last=30)
    assert lines[0] == "id   note"
    assert lines[1].startswith("a1   rejected")
    continued = [line for line in lines[2:] if line.startswith("     ")]
    assert continued and all(len(line) <= 5 + 30 for line in lines)
    assert lines[-1] == "b22  short"
    assert " ".join(line[5:] for line in lines[1:-1]).split() == LONG.split()


def test_the_ledger_reason_column_is_wrapped_not_cut() -> None:
    row = LedgerRow(seq=3, step=1210, wall_time=0.0, command_id="rules-ab", source="rules",
                    decision="rejected", knob="lr", reason=LONG)  # fmt: skip
    lines = ledger_lines([row], width=40)
    assert "..." not in "\n".join(lines)
    reason_at = lines[0].index("reason")
    assert " ".join(line[reason_at:] for line in lines[1:]).split() == LONG.split()
    assert all(len(line) <= reason_at + 40 for line in lines)


def test_watch_lines_wrap_a_long_diagnosis_and_fallback_in_full() -> None:
    from autopilot.cli.decisions import brief_lines
    from autopilot.decisions import DecisionRecord
    from autopilot.diagnoses import Diagnosis

    message = "val/loss has not improved meaningfully since step 900: " + LONG
    fallback = "the provider answered HTTP 500 three times in a row: " + LONG
    record = DecisionRecord(
        id="d1", step=1210, mode="ai_suggest", proposer="rules", fallback_reason=fallback,
        diagnoses=[Diagnosis(kind="plateau", metric="val/loss", step=1210, message=message)],
    )  # fmt: skip
    lines = brief_lines(record.model_dump_json())
    text = " ".join(lines)
    assert "..." not in text and all(len(line) <= 100 for line in lines)
    assert " ".join(message.split()) in " ".join(text.split())
    assert " ".join(fallback.split()) in " ".join(text.split())
    assert lines[0].startswith("  step 1210: plateau: val/loss")


def test_watch_wraps_a_measured_effect() -> None:
    from autopilot.cli.decisions import brief_lines
    from autopilot.decisions import EffectRecord

    effect = EffectRecord(
        decision_id="d1", command_id="rules-d167-be7a54-0", knob="lr", applied_step=182,
        horizon_steps=100, key_metric="val/loss", projected=0.9, observed=0.11,
        change_rel=0.878, verdict="better", measured_at_step=284,
    )  # fmt: skip
    lines = brief_lines(effect.model_dump_json())
    assert len(lines) == 2 and all(len(line) <= 100 for line in lines)
    assert lines[0].startswith("  step 284: effect of the change to lr at step 182")
    assert lines[1].startswith(" " * 12) and lines[1].endswith("measured at step 284)")
