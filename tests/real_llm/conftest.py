"""The ``real_llm`` tier: the autopilot against the stock llama.cpp server and a real model.

It is not part of the default suite (it needs a compiled llama.cpp and runs for minutes):
its tests are skipped unless ``AUTOPILOT_REAL_LLM=1``, which ``make test-real-llm`` sets
after installing the server and the weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _llama import LlamaServer

ENABLE = "AUTOPILOT_REAL_LLM"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_llm: needs a real model server (make test-real-llm runs them)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ENABLE) == "1":
        return
    skip = pytest.mark.skip(reason=f"the real_llm tier runs with `make test-real-llm` ({ENABLE}=1)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.real_llm)
            item.add_marker(skip)


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The stock server on a free loopback port, ready to answer."""
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(log) as server:
        yield server
