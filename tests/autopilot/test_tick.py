"""The tick graph's shape and contracts: typed nodes and routers, no summarize node, the
``detectors=`` hook really used, and one read of the run directory per tick."""

from __future__ import annotations

import inspect
import sys
import threading
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_graph import (
    BUG_LR,
    BUG_STEP,
    Training,
    decisions,
    diverges_above_0_2,
    healthy,
)

from autopilot import nodes, propose
from autopilot.diagnoses import Diagnosis
from autopilot.graph import NODES, build_graph
from autopilot.state import TickContext, TickState
from autopilot.summary import RunSummary, Windows
from autopilot.watch import Autopilot, start_in_background
from kernel.ledger import LEDGER_FILE
from kernel.state import STATE_FILE


# -- the graph's shape and types ----------------------------------------------------------------
def test_the_graph_has_no_summarize_node(tmp_path, settings):
    graph = build_graph(TickContext.create(tmp_path, settings, "suggest")).get_graph()
    assert set(graph.nodes) == {"__start__", "__end__", *NODES}
    assert "summarize" not in graph.nodes
    edges = {(e.source, e.target) for e in graph.edges}
    assert ("observe", "evaluate") in edges and ("observe", "__end__") in edges


NODE_FUNCTIONS = [
    nodes.observe,
    nodes.evaluate,
    nodes.diagnose,
    nodes.guard,
    nodes.route,
    propose.llm,
    propose.rules,
]
ROUTERS = {
    nodes.after_observe: {"evaluate", "__end__"},
    nodes.after_diagnose: {"llm", "rules", "route", "__end__"},
    propose.after_llm: {"guard", "rules", "__end__"},
}


@pytest.mark.parametrize("node", NODE_FUNCTIONS, ids=lambda f: f.__name__)
def test_every_node_takes_the_context_and_the_tick_state(node):
    hints = typing.get_type_hints(node)
    params = list(inspect.signature(node).parameters)
    assert params == ["ctx", "state"]
    assert (hints["ctx"], hints["state"], hints["return"]) == (TickContext, TickState, TickState)


@pytest.mark.parametrize("router", ROUTERS, ids=lambda f: f.__name__)
def test_every_router_returns_a_literal_of_its_targets(router):
    returned = typing.get_type_hints(router)["return"]
    assert typing.get_origin(returned) is typing.Literal
    assert set(typing.get_args(returned)) == ROUTERS[router]
    assert typing.get_type_hints(router)["state"] is TickState


@pytest.fixture
def settings(tmp_path):
    from test_graph import rule_settings

    return rule_settings(tmp_path)


# -- the detectors hook -------------------------------------------------------------------------
class LossBelow:
    """A user's detector: a plateau as soon as ``train/loss`` is under ``level``."""

    name = "loss_below"

    def __init__(self, level: float) -> None:
        self.level = level

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        loss = summary.metrics.get("train/loss")
        if loss is None or loss.last is None or loss.last >= self.level:
            return []
        message = f"custom: train/loss {loss.last:.3g} is below {self.level}"
        return [Diagnosis(kind="plateau", metric="train/loss", step=summary.step, message=message)]


def test_a_custom_detector_passed_to_the_autopilot_is_the_one_that_runs(
    make_kernel, run_dir, settings
):
    run = Training(make_kernel, healthy)
    with Autopilot(run_dir, mode="off", settings=settings, detectors=[LossBelow(10.0)]) as pilot:
        [record] = run.until(lambda: decisions(run_dir), pilot)
    [diagnosis] = record.diagnoses
    assert diagnosis.message.startswith("custom: train/loss")


def test_no_detectors_means_nothing_is_diagnosed_even_when_the_run_diverges(
    make_kernel, run_dir, settings
):
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="off", settings=settings, detectors=[]) as pilot:
        run.train(BUG_STEP, pilot)
        run.set_lr(BUG_LR)
        run.train(100, pilot)
    assert decisions(run_dir) == []


def test_start_in_background_passes_the_detectors_on(run_dir, settings):
    run_dir.mkdir()
    mine = LossBelow(1.0)
    background = start_in_background(run_dir, mode="off", settings=settings, detectors=[mine])
    try:
        assert background.pilot.context.detectors == (mine,)
    finally:
        background.stop()


# -- one read of the run directory per tick -----------------------------------------------------
class Opens:
    """Which files of a run directory this thread opens while ``recording`` (an audit
    hook sees every ``open``, whoever calls it)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.recording, self.seen = str(run_dir), False, Counter[str]()
        self._thread = threading.get_ident()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording or event != "open" or threading.get_ident() != self._thread:
            return
        path = args[0]
        if isinstance(path, str | Path) and str(path).startswith(self.run_dir):
            self.seen[Path(path).name] += 1

    def tick(self, pilot: Autopilot) -> dict[str, Any]:
        self.seen.clear()
        self.recording = True
        try:
            return pilot.tick()
        finally:
            self.recording = False


def test_a_deciding_tick_reads_kernel_json_and_the_ledger_once(make_kernel, run_dir, settings):
    run = Training(make_kernel, diverges_above_0_2)
    opens = Opens(run_dir)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
        run.set_lr(BUG_LR)
        for _ in range(60):
            run.train(10)
            state = opens.tick(pilot)
            if state["outcome"] == "diagnosed":
                break
        assert state["outcome"] == "diagnosed" and state["verdicts"]
    assert decisions(run_dir)[0].route == "kernel"
    # the ledger is tailed (opened when it grew), never re-read in full
    assert opens.seen[STATE_FILE] == 1 and opens.seen[LEDGER_FILE] <= 1, opens.seen


def test_an_idle_tick_does_not_read_kernel_json(make_kernel, run_dir, settings):
    run = Training(make_kernel, healthy)
    opens = Opens(run_dir)
    with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
        run.train(100, pilot)
        run.train(3)  # fewer than tick_every_steps new steps
        assert opens.tick(pilot)["outcome"] == "idle"
    assert opens.seen[STATE_FILE] == 0
