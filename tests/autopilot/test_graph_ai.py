"""The tick graph end to end in the AI modes, against the scripted OpenAI-compatible server:
the analyst and planner decide, every way the LLM can fail ends in the rules with the reason
recorded, the budget stops calls at its cap, and the guards bound whatever the planner says.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import Response
from llm_server import Body, Reply, answer, raw, slow, status
from test_graph import (
    BUG_LR,
    BUG_STEP,
    Training,
    applied,
    commands,
    decisions,
    diverge,
    diverges_above_0_2,
    flat_and_hurt_by_lower_lr,
    keeps_diverging,
)

from autopilot.budget import Budget
from autopilot.decisions import DecisionRecord
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot, start_in_background
from kernel import read_ledger

ANALYST = {
    "kind": "divergence",
    "metric": "train/loss",
    "summary": "train/loss five times its best since the lr jumped to 0.5",
    "evidence": ["train/loss x5 since step 150"],
    "confidence": 0.9,
}
PLAN = {
    "actions": [{"knob": "lr", "multiplier": 0.1, "reason": "back below where it diverged"}],
    "confidence": 0.85,
    "reasoning": "the jump started with the lr change",
}
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per million tokens of the test model (conftest.PRICE)


def analyst_or_planner(body: Body) -> Response | Awaitable[Response]:
    """The analyst's or the planner's answer, by the schema the request asks for."""
    schema = body["response_format"]["json_schema"]["name"]
    return answer(ANALYST if schema == "AnalystOutput" else PLAN)(body)


def test_ai_auto_sends_the_planners_change_with_its_cost(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(answer(ANALYST), answer(PLAN))
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="ai_auto", settings=make_settings()) as pilot:
        record = diverge(run, pilot)
        run.train(1)
    assert len(llm_server.calls) == 2
    assert (record.proposer, record.fallback_reason, record.route) == ("ai", None, "kernel")
    assert record.prompt_version and record.prompt_version.startswith("analyst@")
    assert "+planner@" in record.prompt_version
    usage = record.usage
    assert (usage.tokens_in, usage.tokens_out, usage.calls) == (240, 80, 2)  # 120 + 40 each
    assert record.usage.cost_usd == pytest.approx((240 * PRICE_IN + 80 * PRICE_OUT) / 1e6)
    [command] = commands(run_dir)
    assert (command.source, command.proposal_id, command.multiplier) == ("ai", record.id, 0.1)
    [row] = applied(run_dir, command.id)
    assert (row.source, row.before, row.after) == ("ai", BUG_LR, pytest.approx(0.05))


FALLBACKS: dict[str, tuple[dict[str, Any], list[Reply], str]] = {
    "no key": ({"llm": {"api_key_env": "AUTOPILOT_TEST_UNSET_KEY"}}, [], "no API key: set"),
    "provider 500": ({}, [status(500)], "HTTP 500"),
    "timeout": ({"llm": {"timeout_s": 0.2}}, [slow(2.0, answer(ANALYST))], "timed out after"),
    "garbage twice": ({}, [raw("<html>bad gateway</html>")], "invalid output twice"),
    "malformed twice": ({}, [answer({"kind": "meltdown"})], "invalid output twice"),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_each_llm_failure_falls_back_to_the_rules_and_says_why(
    case, llm_server, make_settings, make_kernel, run_dir, monkeypatch
):
    sections, replies, reason = FALLBACKS[case]
    monkeypatch.delenv("AUTOPILOT_TEST_UNSET_KEY", raising=False)
    llm_server.script(*(replies or [answer(ANALYST)]))
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="ai_auto", settings=make_settings(**sections)) as pilot:
        record = diverge(run, pilot)
    assert record.proposer == "rules" and reason in (record.fallback_reason or "")
    assert record.route == "kernel" and record.diagnoses[0].kind == "divergence"
    [command] = commands(run_dir)
    assert (command.source, command.multiplier) == ("rules", 0.1)
    assert (len(llm_server.calls) == 0) == (case == "no key")
    assert record.usage.calls == len(llm_server.calls)  # the failed calls' usage is recorded


def test_the_budget_cap_stops_llm_calls_and_the_rules_take_over(
    llm_server, make_settings, make_kernel, run_dir
):
    cap = 0.009  # room for a few decisions: the analyst's reservation holds the planner's too
    settings = make_settings(
        budget={"per_run_usd": cap, "min_steps_between_calls": 0},
        cadence={"repeat_after_steps": 10},
    )
    llm_server.script(analyst_or_planner)
    run = Training(make_kernel, keeps_diverging)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        run.train(BUG_STEP, pilot)
        refused = run.until(lambda: _budget_fallbacks(run_dir), pilot)[0]
        calls = len(llm_server.calls)
        run.until(lambda: len(_budget_fallbacks(run_dir)) >= 3, pilot)
    records = decisions(run_dir)
    assert records[0].proposer == "ai" and len(llm_server.calls) == calls
    later = [r for r in records if r.step >= refused.step]
    assert all(r.proposer == "rules" for r in later) and later == _budget_fallbacks(run_dir)
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
    llm_server.script(answer(ANALYST), answer(wild))
    settings = make_settings(bounds={"lr": [1e-6, 0.8]})
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        record = diverge(run, pilot)
        run.train(1)
    assert record.proposer == "ai"
    lr, wd = record.verdicts
    assert lr.status == "clamped" and "guards.max_up" in lr.reason and "bounds" in lr.reason
    assert wd.status == "clamped" and "guards.max_up" in wd.reason
    assert [(c.knob, c.value, c.multiplier) for c in commands(run_dir)] == [
        ("lr", 0.8, None),  # 1e9, capped at x2 of 0.5, then into the config's [1e-6, 0.8]
        ("weight_decay", None, 2.0),  # x50, capped at x2
    ]
    assert [r.after for r in read_ledger(run_dir)] == [0.8, pytest.approx(2e-4)]


def test_ai_suggest_puts_the_ai_proposal_in_the_review_queue(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(answer(ANALYST), answer(PLAN))
    settings = make_settings()
    run = Training(make_kernel, diverges_above_0_2)
    with Autopilot(run_dir, mode="ai_suggest", settings=settings) as pilot:
        record = diverge(run, pilot)
    [item] = ReviewQueue(run_dir, settings).items()
    assert (record.route, record.proposal_id, item.id) == ("review", item.id, record.id)
    assert item.proposal.proposer == "ai" and item.proposal.prompt_version
    assert [a.describe() for a in item.proposal.actions] == ["lr x0.1"]
    assert item.usage == record.usage and record.usage.cost_usd > 0
    assert commands(run_dir) == []


def test_kernel_steps_go_on_while_the_background_autopilot_waits_for_the_llm(
    llm_server, make_settings, make_kernel, run_dir
):
    llm_server.script(slow(1.5, answer(ANALYST)), answer(PLAN))
    settings = make_settings(cadence={"poll_interval_s": 0.01})
    run = Training(make_kernel, diverges_above_0_2)
    background = start_in_background(run_dir, mode="ai_auto", settings=settings)
    try:
        run.train(BUG_STEP)
        run.set_lr(BUG_LR)
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
    plateau = {**ANALYST, "kind": "plateau", "summary": "val/loss flat", "evidence": []}
    hold = {"actions": [], "confidence": 0.9, "reasoning": "wait and see"}
    llm_server.script(lambda body: answer(plateau if "Analyst" in str(body) else hold)(body))
    settings = make_settings(
        budget={"min_steps_between_calls": 200},
        cadence={"repeat_after_steps": 10},
        detectors={"plateau_patience_steps": 50},
    )
    run = Training(make_kernel, flat_and_hurt_by_lower_lr)
    with Autopilot(run_dir, mode="ai_auto", settings=settings) as pilot:
        [first] = run.until(lambda: decisions(run_dir), pilot)
        run.train(150, pilot)  # the plateau persists, but the next LLM call is 200 steps away
        assert decisions(run_dir) == [first]
        later = run.until(lambda: decisions(run_dir)[1:], pilot, max_steps=200)
    assert first.proposer == "ai" and first.diagnoses[0].kind == "plateau"
    assert later[0].proposer == "ai" and later[0].step >= first.step + 200
