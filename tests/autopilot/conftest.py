"""Fixtures of the autopilot tests: the scripted LLM server and settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import ScriptedLLM, ServerThread

from autopilot.config import Settings

TEST_MODEL = "test-model"
TEST_KEY_ENV = "AUTOPILOT_TEST_LLM_KEY"
PRICE = {"input": 1.0, "cached_input": 0.5, "output": 2.0}
"""USD per million tokens of ``TEST_MODEL``: round numbers, so costs are easy to check."""


@pytest.fixture(scope="session")
def _llm_server_session() -> Iterator[ScriptedLLM]:
    # one server for the session: starting one takes ms, but stopping takes ~0.2 s
    scripted = ScriptedLLM()
    with ServerThread(scripted.app) as thread:
        scripted.port = thread.port
        yield scripted


@pytest.fixture
def llm_server(_llm_server_session: ScriptedLLM) -> Iterator[ScriptedLLM]:
    """The scripted server, with no script and no recorded calls."""
    _llm_server_session.reset()
    yield _llm_server_session
    _llm_server_session.reset()


@pytest.fixture
def make_settings(llm_server: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Build ``Settings`` aimed at the scripted server; keyword sections override.

    The key is set in ``$AUTOPILOT_TEST_LLM_KEY``, retries are off, the timeout is short,
    and the per-day spend ledger lives in ``tmp_path`` (never the home directory).
    """
    monkeypatch.setenv(TEST_KEY_ENV, "test-key")

    def make(**sections: dict[str, Any]) -> Settings:
        raw: dict[str, Any] = {
            "mode": "ai_auto",
            "llm": {
                "base_url": llm_server.base_url,
                "model": TEST_MODEL,
                "api_key_env": TEST_KEY_ENV,
                "timeout_s": 5.0,
                "max_retries": 0,
                "max_output_tokens": 300,
            },
            "prices": {TEST_MODEL: PRICE},
            "budget": {"day_ledger": str(tmp_path / "day-spend.jsonl")},
        }
        for name, values in sections.items():
            raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
        return Settings.model_validate(raw)

    return make


@pytest.fixture
def llm_settings(make_settings: Any) -> Settings:
    """The default ``make_settings()``."""
    return make_settings()
