"""LLMPolicy end to end against the scripted server: proposals, spend, and every fallback."""

from __future__ import annotations

import json
import random

import pytest
from llm_server import answer, slow, status

from autopilot.budget import Budget, count_message_tokens
from autopilot.diagnoses import Diagnosis
from autopilot.llm import AnalystOutput, LLMClient
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.policies.llm import LLMPolicy, LLMUnavailable, analyst_fields, planner_fields
from autopilot.summary import render_table, summarize
from autopilot.tokens import count_tokens
from kernel import KnobSpec, LedgerRow
from prompts import load_prompt

PLATEAU = {
    "kind": "plateau",
    "metric": "val/loss",
    "summary": "val/loss flat for 480 steps",
    "evidence": ["best 0.412 at step 3510"],
    "confidence": 0.9,
}
HEALTHY = {**PLATEAU, "kind": "healthy", "metric": None, "summary": "still improving"}
PLAN = {
    "actions": [{"knob": "lr", "multiplier": 0.5, "reason": "plateau after warmup"}],
    "confidence": 0.7,
    "reasoning": "halving lr helped at step 2500",
    "look_again_steps": 200,
}
METRICS = [
    "train/loss", "val/loss", "train/acc", "val/acc", "train/ppl", "val/ppl", "lr",
    "grad_norm", "weight_norm", "train/loss_ce", "train/loss_aux", "val/loss_ce", "val/f1",
    "val/auc", "throughput", "gpu_mem", "loss_scale", "train/top5", "val/top5", "epoch",
]  # fmt: skip


def table_of(names: list[str]) -> str:
    """The real summary table of a run logging ``names`` for 2,000 steps."""
    rng = random.Random(0)
    windows = {
        n: [[s, 1.0 / (1 + s / 500) + 0.01 * rng.random()] for s in range(2000, 4000, 10)]
        for n in names
    }
    best = {n: [0.3, 3500] for n in names}
    summary = summarize(windows, best, step=3990, key_metric="val/loss", key_mode="min")
    return render_table(summary)


def knob(name: str, value: float, lo: float, hi: float, **kw) -> KnobSpec:
    return KnobSpec(name=name, kind="float", lo=lo, hi=hi, value=value, **kw)


def context(table: str = "", **kw) -> PolicyContext:
    fields = {
        "step": 3990,
        "mode": "ai_auto",
        "key_metric": "val/loss",
        "key_mode": "min",
        "diagnoses": [
            Diagnosis(
                kind="plateau",
                metric="val/loss",
                step=3990,
                message="val/loss has not improved by 1% for 480 steps",
            )  # fmt: skip
        ],
        "knobs": {
            k.name: k
            for k in [
                knob("lr", 3e-4, 1e-6, 0.1, scale="log", description="learning rate"),
                knob("weight_decay", 0.01, 0.0, 0.5),
                knob("grad_clip", 1.0, 0.0, 100.0),
                knob("loss.aux_weight", 0.5, 0.0, 10.0),
                KnobSpec(name="ema", kind="bool", value=False),
            ]
        },
        "summary_table": table or table_of(["train/loss", "val/loss"]),
        "recent_changes": [
            LedgerRow(
                seq=1,
                step=2500,
                wall_time=0.0,
                decision="applied",
                knob="lr",
                before=6e-4,
                after=3e-4,
                source="ai",
            )  # fmt: skip
        ],
        "past_decisions": [
            PastDecision(
                step=2500,
                diagnosis="plateau on val/loss",
                actions=["lr x0.5"],
                effect="val/loss 4% better than projected",
            )  # fmt: skip
        ],
        "memory_notes": "Run cifar-12: on a plateau after step 3000, lr x0.5 helped twice; "
        "weight_decay x2 made val/loss worse.",
    }
    return PolicyContext(**{**fields, **kw})


def policy_for(settings, run_dir, **kw) -> LLMPolicy:
    return LLMPolicy(settings, run_dir, **kw)


def test_analyst_then_planner_make_a_proposal(llm_server, llm_settings, run_dir):
    llm_server.script(
        answer(PLATEAU, prompt_tokens=900, completion_tokens=60),
        answer(PLAN, prompt_tokens=400, completion_tokens=50),
    )
    proposal = policy_for(llm_settings, run_dir).propose(context())
    assert proposal.proposer == "ai" and proposal.prompt_version == "analyst@v1+planner@v1"
    assert [a.describe() for a in proposal.actions] == ["lr x0.5"]
    assert proposal.diagnosis == "plateau on val/loss: val/loss flat for 480 steps"
    assert proposal.confidence == 0.7 and proposal.look_again_steps == 200
    assert (proposal.tokens_in, proposal.tokens_out) == (1300, 110)
    assert proposal.cost_usd == pytest.approx((1300 * 1.0 + 110 * 2.0) / 1e6)
    assert Budget(run_dir, llm_settings).spent_run() == pytest.approx(proposal.cost_usd)


def test_the_analyst_reads_the_table_and_the_planner_the_knobs(llm_server, llm_settings, run_dir):
    llm_server.script(answer(PLATEAU), answer(PLAN))
    policy_for(llm_settings, run_dir).propose(context())
    analyst, planner = (llm_server.messages(i)[1]["content"] for i in (0, 1))
    assert "* val/loss" in analyst and "plateau on val/loss at step 3990" in analyst
    assert "lr x0.5; effect: val/loss 4% better" in analyst and "cifar-12" in analyst
    assert "lr: log, [1e-06, 0.1], now 0.0003 (learning rate)" in planner
    assert "ema: bool, now false" in planner and "lr 0.0006 -> 0.0003 (ai)" in planner
    assert "val/loss flat for 480 steps (confidence 0.90)" in planner
    assert "At most 2 actions" in planner and "* val/loss" not in planner


def test_a_healthy_run_gets_no_actions_and_no_planner_call(llm_server, llm_settings, run_dir):
    llm_server.script(answer(HEALTHY))
    proposal = policy_for(llm_settings, run_dir).propose(context())
    assert proposal.actions == [] and proposal.diagnosis.startswith("healthy")
    assert proposal.prompt_version == "analyst@v1" and len(llm_server.calls) == 1


def test_actions_out_of_bounds_or_on_unknown_knobs_pass_through_to_the_guards(
    llm_server, llm_settings, run_dir
):
    wild = {
        **PLAN,
        "actions": [{"knob": "lr", "value": 5.0}, {"knob": "momentum", "multiplier": 0.9}],
    }
    llm_server.script(answer(PLATEAU), answer(wild))
    proposal = policy_for(llm_settings, run_dir).propose(context())
    assert [a.describe() for a in proposal.actions] == ["lr=5", "momentum x0.9"]


def test_no_key_falls_back_before_any_request(llm_server, make_settings, run_dir, monkeypatch):
    monkeypatch.delenv("AUTOPILOT_TEST_LLM_KEY")
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(make_settings(), run_dir).propose(context())
    assert caught.value.reason == (
        "no API key: set AUTOPILOT_TEST_LLM_KEY (named by llm.api_key_env)"
    )
    assert llm_server.calls == [] and caught.value.cost_usd == 0


def test_an_injected_client_is_used(llm_server, llm_settings, run_dir):
    llm_server.script(answer(HEALTHY))
    client = LLMClient(llm_settings.llm, "another-key")
    policy_for(llm_settings, run_dir, client=client).propose(context())
    assert len(llm_server.calls) == 1


def test_invalid_output_twice_falls_back_and_is_charged(llm_server, llm_settings, run_dir):
    llm_server.script(answer("not json"))
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(llm_settings, run_dir).propose(context())
    err = caught.value
    assert err.reason.startswith("invalid output twice: ") and "\n" not in err.reason
    assert (err.tokens_in, err.tokens_out) == (240, 80)
    assert err.cost_usd > 0
    assert Budget(run_dir, llm_settings).spent_run() == pytest.approx(err.cost_usd)


def test_a_planner_failure_reports_the_analysts_spend(llm_server, llm_settings, run_dir):
    llm_server.script(answer(PLATEAU), status(500, "boom"))
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(llm_settings, run_dir).propose(context())
    assert "HTTP 500" in caught.value.reason
    assert (caught.value.tokens_in, caught.value.tokens_out) == (120, 40)
    assert caught.value.cost_usd == pytest.approx((120 + 80) / 1e6)


def test_a_timeout_falls_back_with_the_timeout_in_the_reason(llm_server, make_settings, run_dir):
    llm_server.script(slow(0.6, answer(PLATEAU)))
    settings = make_settings(llm={"timeout_s": 0.3})
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(settings, run_dir).propose(context())
    assert caught.value.reason.startswith("provider timed out after 0.3 s")
    assert caught.value.cost_usd > 0  # a timed-out call may have been billed


def test_a_model_without_a_price_falls_back(llm_server, make_settings, run_dir):
    settings = make_settings(llm={"model": "unpriced"})
    with pytest.raises(LLMUnavailable, match=r'^budget: no price known.*\[prices\."unpriced"\]'):
        policy_for(settings, run_dir).propose(context())
    assert llm_server.calls == []


def test_a_tiny_cap_stops_calls_exactly_at_the_cap(llm_server, make_settings, run_dir):
    llm_server.script(answer(HEALTHY))
    probe = policy_for(make_settings(), run_dir / "probe")
    worst = _analyst_worst_case(probe, make_settings(), run_dir / "probe")
    actual = (120 * 1.0 + 40 * 2.0) / 1e6
    # room for exactly four calls: after three charges, one worst case still fits
    cap = 3 * actual + worst * (1 + 1e-9)
    settings = make_settings(budget={"per_run_usd": cap})
    policy = policy_for(settings, run_dir)
    made = 0
    with pytest.raises(LLMUnavailable) as caught:
        for _ in range(20):
            policy.propose(context())
            made += 1
    spent = Budget(run_dir, settings).spent_run()
    assert made == 4 and len(llm_server.calls) == 4  # the refused call never reached the server
    assert caught.value.reason.startswith("budget: per-run cap") and caught.value.cost_usd == 0
    assert spent <= cap < spent + worst


def _analyst_worst_case(policy: LLMPolicy, settings, run_dir) -> float:
    messages = load_prompt("analyst").messages(**analyst_fields(context()))
    schema = json.dumps(AnalystOutput.model_json_schema())
    budget = Budget(run_dir, settings)
    return budget.estimate(messages, 300, attempts=2, extra_text=schema).usd


def test_a_20_metric_prompt_stays_small():
    ctx = context(table=table_of(METRICS))
    analysis = AnalystOutput(**PLATEAU)
    analyst = load_prompt("analyst").messages(**analyst_fields(ctx))
    planner = load_prompt("planner").messages(**planner_fields(ctx, analysis, 2))
    table = count_tokens(ctx.summary_table)
    total = count_message_tokens(analyst) + count_message_tokens(planner)
    print(f"20-metric prompt: {total} tokens, of which the table {table}")
    assert total - table < 800
