"""The tick graph end to end in the AI modes, against the scripted OpenAI-compatible server:
the analyst and planner decide, every way the LLM can fail ends in the rules with the reason
recorded, the budget stops calls at its cap, and the guards bound whatever the planner says.

The LLM call runs outside the tick: the tick that asks returns at once and a later tick
judges the answer. The tests wait for the call to settle between ticks (``settled_until``),
so the answer is always taken by the tick right after the one that asked; a provider that
hangs is a ``Gate`` the test opens.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import poll
from fastapi.responses import Response
from llm_server import Body, Reply, answer, llama_cpp, raw, slow, status
from test_graph import (
    BUG_LR,
    BUG_STEP,
    LR,
    Training,
    applied,
    commands,
    decisions,
    diverges_above_0_2,
    flat_and_hurt_by_lower_lr,
    keeps_diverging,
)

from autopilot.budget import Budget
from autopilot.decisions import DecisionRecord
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot, start_in_background
from kernel import read_ledger

T = TypeVar("T")

ANALYST = {
    "kind": "divergence",
    "metric": "train/loss",
    "summary": "train/loss five times its best since the lr jumped to 0.5",
    "evidence": ["train/loss x5 since step 150"],
    "confidence": 0.9,
}
PLATEAU = {**ANALYST, "kind": "plateau", "summary": "val/loss flat", "evidence": []}
PLAN = {
    "actions": [{"knob": "lr", "multiplier": 0.1, "reason": "back below where it diverged"}],
    "confidence": 0.85,
    "reasoning": "the jump started with the lr change",
}
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per million tokens of the test model (conftest.PRICE)


def analyst_or_planner(body: Body) -> Response | Awaitable[Response]:
    """The analyst's or the planner's answer, by the schema the request asks for."""
    fmt = body["response_format"]  # json_schema, or json_object with a schema (llama.cpp)
    schema = fmt.get("json_schema", {}).get("schema") or fmt.get("schema") or {}
    return answer(PLAN if "actions" in schema.get("properties", {}) else ANALYST)(body)


def plateau_or_planner(body: Body) -> Response | Awaitable[Response]:
    """The analyst's plateau diagnosis or the planner's lr x0.1, by the schema asked for."""
    schema = body["response_format"]["json_schema"]["name"]
    return answer(PLATEAU if schema == "AnalystOutput" else PLAN)(body)


def plateau_settings(make_settings: Any, **sections: Any) -> Any:
    """``make_settings`` with a short plateau patience (``flat_and_hurt_by_lower_lr``), and
    a progress threshold above the noise, so the plateau does not come and go between the
    tick that asks the LLM and the one that judges its answer."""
    detectors = {"plateau_patience_steps": 50, "plateau_rel": 0.05, **sections.pop("detectors", {})}
    return make_settings(detectors=detectors, **sections)


def settled_until(
    run: Training, pilot: Autopilot, found: Callable[[], T], max_steps: int = 600
) -> T:
    """Like ``Training.until``, but after each tick the LLM call it started (if any) is
    waited for, so the next tick takes its outcome: the test is deterministic."""
    for _ in range(0, max_steps, 10):
        run.train(10, pilot)
        assert pilot.context.llm_calls.wait(20), "the LLM call did not settle"
        value = found()
        if value:
            return value
    raise AssertionError(f"nothing found after {max_steps} steps (now step {run.step})")


def tick_until(
    run: Training, pilot: Autopilot, found: Callable[[dict[str, Any]], bool], max_steps: int = 600
) -> dict[str, Any]:
    """Train 10 steps and tick until ``found(state)``; the state of that tick."""
    for _ in range(0, max_steps, 10):
        run.train(10)
        state = pilot.tick()
        if found(state):
            return state
    raise AssertionError(f"no such tick after {max_steps} steps (now step {run.step})")


def present(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda state: any(d["kind"] == kind for d in state.get("present", []))


class Gate:
    """A provider that hangs: every request waits at the server until the test opens it."""

    def __init__(self, then: Reply) -> None:
        self.then, self.opened = then, threading.Event()

    async def __call__(self, body: Body) -> Response:
        while not self.opened.is_set():
            await asyncio.sleep(0.005)
        result = self.then(body)
        return await result if inspect.isawaitable(result) else result


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate(analyst_or_planner)
    yield held
    held.opened.set()  # a failed test must not leave a request hanging at the server


def test_ai_auto_sends_the_planners_change_with_its_cost(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(answer(PLATEAU), answer(PLAN))
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_auto", settings=plateau_settings(make_settings)) as pilot:
        [record] = settled_until(run, pilot, lambda: decisions(run_dir))
        run.train(1)
    assert len(llm_server.calls) == 2
    assert record.route == "kernel", record.model_dump_json()
    assert (record.proposer, record.fallback_reason) == ("ai", None)
    assert record.diagnoses[0].kind == "plateau"
    assert record.llm_call is not None and record.llm_call.status == "answered"
    assert record.llm_call.asked_at_step == record.step - 10  # asked one tick, judged the next
    assert record.prompt_version and record.prompt_version.startswith("analyst@")
    assert "+planner@" in record.prompt_version
    usage = record.usage
    assert (usage.tokens_in, usage.tokens_out, usage.calls) == (240, 80, 2)  # 120 + 40 each
    assert record.usage.cost_usd == pytest.approx((240 * PRICE_IN + 80 * PRICE_OUT) / 1e6)
    [command] = commands(run_dir)
    assert (command.source, command.proposal_id, command.multiplier) == ("ai", record.id, 0.1)
    [row] = applied(run_dir, command.id)
    assert (row.source, row.before, row.after) == ("ai", LR, pytest.approx(LR * 0.1))


FALLBACKS: dict[str, tuple[dict[str, Any], list[Reply], str]] = {
    "no key": ({"llm": {"api_key_env": "AUTOPILOT_TEST_UNSET_KEY"}}, [], "no API key: set"),
    "provider 500": ({}, [status(500)], "HTTP 500"),
    "timeout": ({"llm": {"timeout_s": 0.2}}, [slow(2.0, answer(PLATEAU))], "timed out after"),
    "garbage twice": ({}, [raw("<html>bad gateway</html>")], "invalid output twice"),
    "malformed twice": ({}, [answer({"kind": "meltdown"})], "invalid output twice"),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_each_llm_failure_falls_back_to_the_rules_and_says_why(
    case, llm_server, make_settings, make_kernel, run_dir, monkeypatch
):
    sections, replies, reason = FALLBACKS[case]
    monkeypatch.delenv("AUTOPILOT_TEST_UNSET_KEY", raising=False)
    llm_server.script(*(replies or [answer(PLATEAU)]))
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(
        run_dir, mode="ai_auto", settings=plateau_settings(make_settings, **sections)
    ) as pilot:
        [record] = settled_until(run, pilot, lambda: decisions(run_dir))
    assert record.proposer == "rules" and reason in (record.fallback_reason or "")
    assert record.route == "kernel" and record.diagnoses[0].kind == "plateau"
    assert record.llm_call is not None and record.llm_call.status == "failed"
    [command] = commands(run_dir)
    assert (command.source, command.knob) == ("rules", "lr")
    assert (len(llm_server.calls) == 0) == (case == "no key")
    assert record.usage.calls == len(llm_server.calls)  # the failed calls' usage is recorded


def test_the_budget_cap_stops_llm_calls_and_the_rules_take_over(
    llm_server, make_settings, make_kernel, run_dir
):
    cap = 0.009  # room for a few decisions: the analyst's reservation holds the planner's too
    settings = plateau_settings(
        make_settings,
        # the plan's lr cut triples this curve's loss and makes it swing: a divergence or an
        # oscillation, answered by the rules whatever the budget (and silencing the plateau
        # on its curve); the test is about the plateau's decisions
        detectors={"divergence_factor": 10.0, "oscillation_volatility": 10.0},
        budget={"per_run_usd": cap, "min_steps_between_calls": 0},
        cadence={"repeat_after_steps": 10},
        guards={"cooldown_steps": 10, "global_cooldown_steps": 10},
    )
    llm_server.script(plateau_or_planner)
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        refused = settled_until(run, pilot, lambda: _budget_fallbacks(run_dir), 3000)[0]
        calls = len(llm_server.calls)
        settled_until(run, pilot, lambda: len(_budget_fallbacks(run_dir)) >= 3)
    records = decisions(run_dir)
    assert records[0].proposer == "ai" and len(llm_server.calls) == calls
    later = [r for r in records if r.step >= refused.step]
    # the rules decide each refused call's plateau; a refusal for a plateau episode the
    # rules already decided is recorded with no proposal of its own
    assert all(r.proposer == "rules" or r.proposal is None for r in later)
    assert later == _budget_fallbacks(run_dir) and later[0].proposer == "rules"
    spent = Budget(run_dir, settings).spent_run()
    assert spent <= cap
    assert spent == pytest.approx(sum(r.usage.cost_usd for r in records))  # every charge recorded
    so_far, worst = _refusal_figures(refused.fallback_reason or "")
    assert so_far <= cap < so_far + worst  # refused only once the next call could pass the cap


def _budget_fallbacks(run_dir: Path) -> list[DecisionRecord]:
    return [r for r in decisions(run_dir) if (r.fallback_reason or "").startswith("budget:")]


def _refusal_figures(reason: str) -> tuple[float, float]:
    found = re.search(r"\$([\d.]+) spent so far .* up to \$([\d.]+)", reason)
    assert found, reason
    return float(found[1]), float(found[2])


def test_unbounded_planner_values_are_capped_before_the_kernel(
    llm_server, make_settings, make_kernel, run_dir
):
    wild = {
        "actions": [
            {"knob": "lr", "value": 1e9, "reason": "go big"},
            {"knob": "weight_decay", "multiplier": 50, "reason": "much more"},
        ],
        "confidence": 0.9,
    }
    llm_server.script(answer(PLATEAU), answer(wild))
    settings = plateau_settings(make_settings, bounds={"lr": [1e-6, 0.15]})
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        [record] = settled_until(run, pilot, lambda: decisions(run_dir))
        run.train(1)
    assert record.proposer == "ai"
    lr, wd = record.verdicts
    assert lr.status == "clamped" and "guards.max_up" in lr.reason and "bounds" in lr.reason
    assert wd.status == "clamped" and "guards.max_up" in wd.reason
    assert [(c.knob, c.value, c.multiplier) for c in commands(run_dir)] == [
        ("lr", 0.15, None),  # 1e9, capped at x2 of 0.1, then into the config's [1e-6, 0.15]
        ("weight_decay", None, 2.0),  # x50, capped at x2
    ]
    assert [r.after for r in read_ledger(run_dir)] == [0.15, pytest.approx(2e-4)]


def test_ai_suggest_puts_the_ai_proposal_in_the_review_queue(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(answer(PLATEAU), answer(PLAN))
    settings = plateau_settings(make_settings)
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_suggest", settings=settings) as pilot:
        [record] = settled_until(run, pilot, lambda: decisions(run_dir))
    [item] = ReviewQueue(run_dir, settings).items()
    assert (record.route, record.proposal_id, item.id) == ("review", item.id, record.id)
    assert item.proposal.proposer == "ai" and item.proposal.prompt_version
    assert [a.describe() for a in item.proposal.actions] == ["lr x0.1"]
    assert item.usage == record.usage and record.usage.cost_usd > 0
    assert commands(run_dir) == []


def test_kernel_steps_go_on_while_the_background_autopilot_waits_for_the_llm(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(slow(1.5, answer(PLATEAU)), answer(PLAN))
    settings = plateau_settings(make_settings, cadence={"poll_interval_s": 0.01})
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    background = start_in_background(run_dir, mode="ai_auto", settings=settings)
    try:
        _train_while(run, lambda: not llm_server.calls)
        asked_at = run.step  # the analyst's request has reached the server
        _train_while(run, lambda: len(llm_server.calls) < 2)
        answered_at = run.step  # its answer came back: the planner is asked
        _train_while(run, lambda: not decisions(run_dir))
    finally:
        background.stop()
    assert answered_at - asked_at >= 10  # the training went on during the call
    first = decisions(run_dir)[0]
    assert first.proposer == "ai" and first.route == "kernel"
    Autopilot(run_dir, mode="off", settings=settings).close()  # stop() released the run


def _train_while(run: Training, going: Callable[[], bool], max_steps: int = 1_000_000) -> None:
    """One step at a time while ``going()``: the training loop of the process."""
    for _ in range(max_steps):
        if not going():
            return
        run.train(1)
    raise AssertionError(f"still waiting after {max_steps} steps")


def test_between_llm_calls_a_plateau_waits_for_the_llm_instead_of_the_rules(
    llm_server, make_settings, make_kernel, run_dir
):
    hold = {"actions": [], "confidence": 0.9, "reasoning": "wait and see"}
    llm_server.script(lambda body: answer(PLATEAU if "Analyst" in str(body) else hold)(body))
    settings = plateau_settings(
        make_settings,
        budget={"min_steps_between_calls": 200},
        cadence={"repeat_after_steps": 10},
    )
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        [first] = settled_until(run, pilot, lambda: decisions(run_dir))
        run.train(150, pilot)  # the plateau persists, but the next LLM call is 200 steps away
        assert decisions(run_dir) == [first]
        later = settled_until(run, pilot, lambda: decisions(run_dir)[1:], max_steps=200)
    assert first.proposer == "ai" and first.diagnoses[0].kind == "plateau"
    assert later[0].proposer == "ai" and later[0].step >= first.step + 200


# -- a provider that hangs never delays an urgent rescue ----------------------------------------
def test_a_divergence_is_cut_by_the_rules_in_the_tick_that_finds_it_while_the_llm_hangs(
    llm_server, make_settings, make_kernel, run_dir, gate
):
    llm_server.script(gate)
    settings = make_settings(llm={"timeout_s": 60.0})
    # a loss that stays up after the cut, so the late answer finds its divergence present
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
        run.set_lr(BUG_LR)
        found = tick_until(run, pilot, present("divergence"))  # the tick that finds it
        [rescue] = decisions(run_dir)
        assert (rescue.step, rescue.proposer, rescue.route) == (found["step"], "rules", "kernel")
        assert (rescue.fallback_reason or "").startswith("urgent: divergence")
        assert rescue.urgent  # by design, not an LLM failure: the evals do not count it as one
        [cut] = commands(run_dir)
        poll(lambda: llm_server.calls, what="the analyst's request at the hanging server")
        assert pilot.context.llm_calls.pending() and found["llm_ask"]["step"] == found["step"]
        run.train(1)
        assert applied(run_dir, cut.id)[0].after == pytest.approx(BUG_LR * 0.1)
        gate.opened.set()  # the provider answers, late
        assert pilot.context.llm_calls.wait(20)
        judged = pilot.tick()  # the next due tick takes the answer to the guards
        run.train(9)
        judged = pilot.tick()
    late = decisions(run_dir)[1]
    assert late.proposer == "ai" and late.llm_call is not None
    assert (late.llm_call.status, late.llm_call.asked_at_step) == ("answered", rescue.step)
    assert late.step == judged["step"] > rescue.step
    [verdict] = late.verdicts  # judged with the run as it is now: lr was cut already
    assert verdict.before == pytest.approx(BUG_LR * 0.1) and verdict.status == "rejected"
    assert verdict.rule == "global_cooldown", verdict
    assert commands(run_dir) == [cut]


def test_a_late_answer_about_a_diagnosis_gone_is_recorded_and_dropped(
    llm_server, make_settings, make_kernel, run_dir, gate
):
    llm_server.script(llama_cpp(gate))  # the provider refuses json_schema once, then hangs
    settings = make_settings(llm={"timeout_s": 60.0})
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
        run.set_lr(BUG_LR)
        asked = tick_until(run, pilot, present("divergence"))["llm_ask"]
        tick_until(run, pilot, lambda state: not present("divergence")(state))  # rescued
        gate.opened.set()
        assert pilot.context.llm_calls.wait(20)
        run.train(10)
        state = pilot.tick()
    assert state["llm_ask"] is None
    rescue, dropped = decisions(run_dir)
    assert dropped.id == f"{asked['id']}-stale" and dropped.route == "none"
    assert dropped.llm_call is not None and dropped.llm_call.status == "stale"
    assert dropped.proposer == "ai" and dropped.usage.calls == 3  # its cost is on record
    assert dropped.note and dropped.note.startswith("stale:")
    assert "refused response_format json_schema" in dropped.note  # said once, not lost
    assert [c.proposal_id for c in commands(run_dir)] == [rescue.id]


def test_a_call_in_flight_at_a_restart_is_recorded_as_lost(
    llm_server, make_settings, make_kernel, run_dir, gate
):
    llm_server.script(gate)
    settings = plateau_settings(make_settings, llm={"timeout_s": 60.0})
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    first = Autopilot(run_dir, mode="ai_auto", settings=settings)
    calls = first.context.llm_calls
    try:
        asked = tick_until(run, first, lambda state: bool(state.get("llm_ask")))["llm_ask"]
        saved = first.graph.get_state(first._config(first._thread)).values
        assert json.loads(json.dumps(saved))["llm_ask"] == asked  # plain JSON, restart-safe
    finally:
        first.close()  # the process dies with the call in flight
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        run.train(10)
        pilot.tick()
        lost = next(r for r in decisions(run_dir) if r.llm_call)
    gate.opened.set()
    assert calls.wait(20)  # the dead process's call ends before the next test's server
    assert lost.id == f"{asked['id']}-lost" and lost.route == "none"
    assert lost.llm_call is not None and lost.llm_call.status == "lost"
    assert lost.note and "was lost" in lost.note and lost.diagnoses[0].kind == "plateau"
