"""Fixtures shared by the test suite: a run directory, kernels with fast cadences, a poller,
and the scripted LLM server with settings that point at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from llm_server import ScriptedLLM, ServerThread
from pg_server import postgres_url  # noqa: F401  (the session's PostgreSQL server fixture)

from autopilot.config import Settings
from kernel import Command, Kernel, KernelSettings, append_command, new_command_id

T = TypeVar("T")

FAST = KernelSettings(
    poll_interval_s=0.0, flush_interval_s=0.0, heartbeat_interval_s=0.0, pause_poll_s=0.002
)
"""Cadences that make every ``kernel.step`` look at ``commands.jsonl`` and write its state."""


def poll(predicate: Callable[[], T], *, timeout: float = 20.0, what: str = "a condition") -> T:
    """Return the first truthy value of ``predicate()``; fail once ``timeout`` has passed.

    The timeout is a safety net against a hung test, never an expectation about speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.002)


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own autopilot config (``--config`` and
    ``$AUTOPILOT_CONFIG`` are the tests' to set) or writes to their state directory (the
    day's spend, the memory store)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("AUTOPILOT_CONFIG", raising=False)
    monkeypatch.delenv("AUTOPILOT_MEMORY_URL", raising=False)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return poll


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def make_kernel(run_dir: Path) -> Iterator[Callable[..., Kernel]]:
    """Build kernels on ``run_dir`` (or ``run_dir=...``) with ``FAST`` cadences; close them."""
    kernels: list[Kernel] = []

    def make(**kw: Any) -> Kernel:
        kw.setdefault("settings", FAST)
        kernel = Kernel(kw.pop("run_dir", run_dir), **kw)
        kernels.append(kernel)
        return kernel

    yield make
    for kernel in kernels:
        kernel.close()


@pytest.fixture
def send(run_dir: Path) -> Callable[..., Command]:
    """Append a command to ``run_dir`` (or ``run_dir=...``) and return it; the id is fresh."""

    def send_(**fields: Any) -> Command:
        target = fields.pop("run_dir", run_dir)
        fields.setdefault("id", new_command_id("test"))
        fields.setdefault("source", "human")
        command = Command(**fields)
        append_command(target, command)
        return command

    return send_


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
