"""Fixtures of the service tests: a root of run directories written by real training loops,
the app with its token, and a client for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _service_runs import TOKEN, Training
from fastapi.testclient import TestClient

from autopilot.service import Fleet, create_app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def train(root: Path) -> Iterator[Callable[..., Training]]:
    """Start a training run in ``root / name``; every run is stopped at the end."""
    started: list[Training] = []

    def start(name: str = "exp1", **kw: object) -> Training:
        run = Training(root / name, **kw)  # type: ignore[arg-type]
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


@pytest.fixture
def fleet(root: Path) -> Iterator[Fleet]:
    fleet = Fleet(root, poll_s=0.05)
    yield fleet
    fleet.stop()


@pytest.fixture
def client(root: Path, fleet: Fleet) -> Iterator[TestClient]:
    with TestClient(create_app(root, token=TOKEN, fleet=fleet)) as c:
        yield c
