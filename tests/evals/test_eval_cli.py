"""The ``autopilot eval`` command line: its help shows every default."""

from __future__ import annotations

import pytest

from autopilot.cli import main


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_bench_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "eval", "bench")
    for default in ("(default: all)", "(default: none,rules,ai,tune)", "(default: 3)",
                    "(default: 6)", "(default: OUT/results.jsonl"):  # fmt: skip
        assert default in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_replay_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "eval", "replay")
    assert "(default: rules)" in text and "(default: 300)" in text
    assert "--tolerance-evals EVALS" in text and "(default: 3)" in text
    assert "(default: OUT/results.jsonl" in text and "(default: None)" not in text
