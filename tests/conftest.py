"""Fixtures shared by the test suite: a run directory, kernels with fast cadences, a poller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

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
