"""LLMPolicy end to end against the scripted server: proposals, spend, and every fallback."""

from __future__ import annotations

import random
from typing import Any

import pytest
from llm_server import answer, llama_cpp, slow, status
from pydantic import ValidationError

from autopilot.budget import Budget
from autopilot.diagnoses import Diagnosis
from autopilot.llm import AnalystOutput, LLMClient, PlannerOutput
from autopilot.llm.formats import response_format_for
from autopilot.observe import fold_records
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.policies.llm import LLMPolicy, LLMUnavailable, Request
from autopilot.summary import render_table, summarize
from autopilot.tokens import Usage, count_message_tokens, count_tokens
from kernel import KnobSpec, LedgerRow, MetricRecord

PLATEAU = {
    "kind": "plateau",
    "metric": "val/loss",
    "summary": "val/loss flat for 480 steps",
    "evidence": ["best 0.412 at step 3510"],
    "confidence": 0.9,
}
ANALYSIS = AnalystOutput.model_validate(PLATEAU)
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
    records = [
        MetricRecord(step=s, metrics={n: 1.0 / (1 + s / 500) + 0.01 * rng.random() for n in names})
        for s in range(2000, 4000, 10)
    ]
    windows, best = fold_records({}, {}, records, window=200)
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
                proposal_id="d2490",
            )  # fmt: skip
        ],
        "past_decisions": [
            PastDecision(
                step=2490,
                diagnosis="val/loss has not improved for 400 steps (best 0.5 at step 2090)",
                actions=["lr x0.5"],
                effect="val/loss 4% better than projected",
                decision_id="d2490",
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
    assert proposal.proposer == "ai" and proposal.prompt_version == "analyst@v4+planner@v4"
    assert [a.describe() for a in proposal.actions] == ["lr x0.5"]
    assert proposal.diagnosis == "plateau on val/loss: val/loss flat for 480 steps"
    assert proposal.confidence == 0.7 and proposal.look_again_steps == 200
    assert (proposal.usage.tokens_in, proposal.usage.tokens_out) == (1300, 110)
    assert proposal.usage.cost_usd == pytest.approx((1300 * 1.0 + 110 * 2.0) / 1e6)
    assert Budget(run_dir, llm_settings).spent_run() == pytest.approx(proposal.usage.cost_usd)


def test_the_analyst_reads_the_table_and_the_planner_the_knobs(llm_server, llm_settings, run_dir):
    llm_server.script(answer(PLATEAU), answer(PLAN))
    policy = policy_for(llm_settings, run_dir)
    policy.propose(context())
    sent = [llm_server.calls[i]["messages"] for i in (0, 1)]
    planner_request = policy.planner_request(context(), ANALYSIS)
    assert sent == [policy.analyst_request(context()).messages, planner_request.messages]
    analyst, planner = (messages[1]["content"] for messages in sent)
    assert "*val/loss" in analyst and "plateau (medium): val/loss has not improved by 1%" in analyst
    assert "Recent knob changes:\n- 2500: lr .0006>.0003 ai\n" in analyst and "cifar-12" in analyst
    assert "better than projected" not in analyst  # the effects are the planner's
    assert '- lr log [1e-6, .1] .0003 ("learning rate")\n' in planner
    assert "- ema bool false" in planner
    assert "- 2500: lr .0006>.0003 ai; val/loss 4% better than projected" in planner
    assert "Diagnosis: plateau on val/loss: val/loss flat for 480 steps\n" in planner
    assert "At most 2 actions" in planner and "*val/loss" not in planner


def test_the_planner_gets_the_key_row_only_without_numbers_on_the_key_metric(llm_settings, run_dir):
    policy = policy_for(llm_settings, run_dir)
    vague = policy.planner_request(context(), ANALYSIS).messages[1]["content"]
    assert "\nval/loss now: " in vague and "steps ago, slope" in vague and "per 1k steps" in vague
    precise = AnalystOutput.model_validate(
        {**PLATEAU, "evidence": ["val/loss best 0.412 at step 3510"]}
    )
    assert "val/loss now: " not in policy.planner_request(context(), precise).messages[1]["content"]


def test_the_planner_can_rewind_first(llm_server, llm_settings, run_dir):
    llm_server.script(answer(PLATEAU), answer({**PLAN, "rewind": "best"}))
    proposal = policy_for(llm_settings, run_dir).propose(context())
    assert [a.describe() for a in proposal.actions] == ["rewind to best", "lr x0.5"]
    schema = policy_for(llm_settings, run_dir).planner_request(context(), ANALYSIS).schema_text
    assert '"rewind"' in schema


def test_changes_without_a_decision_and_decisions_without_a_change_are_listed(
    llm_settings, run_dir
):
    manual = LedgerRow(
        seq=2, step=3000, wall_time=0.0, decision="applied", knob="grad_clip", before=1.0,
        after=5.0, source="human",
    )  # fmt: skip
    approved = manual.model_copy(
        update={"seq": 3, "step": 3200, "before": 5.0, "after": 2.0, "proposed_by": "rules"}
    )  # a person approved the rules' proposal unchanged
    waited = PastDecision(step=3500, diagnosis="plateau; small", actions=[], effect=None)
    ctx = context(
        recent_changes=[*context().recent_changes, manual, approved],
        past_decisions=[*context().past_decisions, waited],
    )
    planner = policy_for(llm_settings, run_dir).planner_request(ctx, ANALYSIS)
    lines = planner.messages[1]["content"].split("Recent knob changes and effects:\n")[1]
    assert lines.split("\n\n")[0].splitlines() == [
        "- 2500: lr .0006>.0003 ai; val/loss 4% better than projected",
        "- 3000: grad_clip 1>5 human",
        "- 3200: grad_clip 5>2 human (approving rules)",
        "- 3500: no change",
    ]


def test_a_healthy_run_gets_no_actions_and_no_planner_call(llm_server, llm_settings, run_dir):
    llm_server.script(answer(HEALTHY))
    proposal = policy_for(llm_settings, run_dir).propose(context())
    assert proposal.actions == [] and proposal.diagnosis.startswith("healthy")
    assert proposal.prompt_version == "analyst@v4" and len(llm_server.calls) == 1


def test_the_planner_schema_names_the_runs_knobs_for_a_grammar(llm_settings, run_dir):
    ctx = context()
    request = policy_for(llm_settings, run_dir).planner_request(ctx, ANALYSIS)
    for fmt in ("json_schema", "json_object+schema"):
        body = response_format_for(request.schema, fmt)
        schema = body["json_schema"]["schema"] if fmt == "json_schema" else body["schema"]
        knob = schema["properties"]["actions"]["items"]["properties"]["knob"]
        assert knob == {"enum": list(ctx.knobs)}
        value = schema["properties"]["actions"]["items"]["properties"]["value"]
        assert value["type"] == ["boolean", "number"]  # a toggle; no knob over param groups
    assert request.schema.__name__ == "PlannerOutput"


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
    assert llm_server.calls == [] and caught.value.usage == Usage()


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
    assert (err.usage.tokens_in, err.usage.tokens_out, err.usage.calls) == (240, 80, 2)
    assert err.usage.cost_usd > 0
    assert Budget(run_dir, llm_settings).spent_run() == pytest.approx(err.usage.cost_usd)


def test_a_planner_failure_reports_the_analysts_spend(llm_server, llm_settings, run_dir):
    llm_server.script(answer(PLATEAU), status(500, "boom"))
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(llm_settings, run_dir).propose(context())
    assert "HTTP 500" in caught.value.reason
    assert (caught.value.usage.tokens_in, caught.value.usage.tokens_out) == (120, 40)
    assert caught.value.usage.cost_usd == pytest.approx((120 + 80) / 1e6)


def test_a_timeout_falls_back_with_the_timeout_in_the_reason(llm_server, make_settings, run_dir):
    llm_server.script(slow(0.6, answer(PLATEAU)))
    settings = make_settings(llm={"timeout_s": 0.3})
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(settings, run_dir).propose(context())
    assert caught.value.reason.startswith("provider timed out after 0.3 s")
    assert caught.value.usage.cost_usd > 0  # a timed-out call may have been billed


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
    assert caught.value.reason.startswith("budget: per-run cap")
    assert caught.value.usage.cost_usd == 0
    assert spent <= cap < spent + worst


def test_the_analyst_is_not_asked_when_the_planner_could_not_follow(
    llm_server, make_settings, run_dir
):
    llm_server.script(answer(PLATEAU), answer(PLAN))
    probe = policy_for(make_settings(), run_dir / "probe")
    request = probe.analyst_request(context())
    analyst = Budget(run_dir / "probe", make_settings()).estimate(
        request.messages, 300, attempts=2, extra_text=request.schema_text
    )
    cap = (analyst.usd + probe.upfront_worst_case(context()).usd) / 2  # the analyst alone fits
    policy = policy_for(make_settings(budget={"per_run_usd": cap}), run_dir)
    with pytest.raises(LLMUnavailable, match="budget: per-run cap"):
        policy.propose(context())
    assert llm_server.calls == []  # no diagnosis bought without the plan it is for


def _analyst_worst_case(policy: LLMPolicy, settings, run_dir) -> float:
    """What the analyst's call reserves: its worst case and the planner's that follows."""
    request = policy.analyst_request(context())
    budget = Budget(run_dir, settings)
    analyst = budget.estimate(request.messages, 300, attempts=2, extra_text=request.schema_text)
    assert policy.upfront_worst_case(context()).usd > analyst.usd
    return policy.upfront_worst_case(context()).usd


def test_the_schemas_sent_are_compact_but_carry_every_constraint(llm_settings, run_dir):
    request = policy_for(llm_settings, run_dir).planner_request(context(), ANALYSIS)
    sent = request.response_format["json_schema"]["schema"]
    assert "title" not in request.schema_text and "description" not in request.schema_text
    assert "$ref" not in request.schema_text and "default" not in request.schema_text
    assert "maxLength" not in request.schema_text  # llama.cpp's grammar parser chokes on them
    assert "additionalProperties" not in request.schema_text and "strict" not in request.schema_text
    assert sent["properties"]["look_again_steps"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1_000_000,
    }  # fmt: skip  (optional: leaving it out is its null)
    assert sent["properties"]["confidence"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert sent["properties"]["rewind"] == {"enum": ["none", "last", "best"]}
    assert sent["properties"]["actions"]["items"]["required"] == ["knob"]
    assert sent["properties"]["actions"]["maxItems"] == 8
    with pytest.raises(ValidationError, match="at most 8 items"):
        PlannerOutput.model_validate(
            {"actions": [{"knob": "lr", "multiplier": 0.5}] * 9, "confidence": 0.5}
        )
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        PlannerOutput(actions=[], confidence=1.5)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PlannerOutput.model_validate({"actions": [], "confidence": 0.5, "lr": 0.1})
    assert (
        PlannerOutput.model_validate(
            {"actions": [], "confidence": 0.5, "look_again_steps": None}
        ).look_again_steps
        is None
    )  # what the schema leaves out, validation still accepts


def test_a_refused_response_format_is_noted_once_in_the_proposal(llm_server, llm_settings, run_dir):
    # the first request is refused, so the analyst's answer is the second reply
    replies = (PLATEAU, PLATEAU, PLAN, PLATEAU, PLAN)
    llm_server.script(*(llama_cpp(answer(reply)) for reply in replies))
    policy = policy_for(llm_settings, run_dir)
    first = policy.propose(context())
    assert first.provider_note and "refused response_format json_schema (HTTP 500)" in (
        first.provider_note
    )
    assert [a.describe() for a in first.actions] == ["lr x0.5"]
    assert first.usage.tokens_in == 240  # the refused request was not billed
    assert policy.propose(context()).provider_note is None
    assert len(llm_server.calls) == 5


def test_a_fallback_after_a_refused_format_says_so_in_its_reason(llm_server, llm_settings, run_dir):
    llm_server.script(llama_cpp(answer("not json")))
    with pytest.raises(LLMUnavailable) as caught:
        policy_for(llm_settings, run_dir).propose(context())
    reason = caught.value.reason
    assert reason.startswith("invalid output twice: ") and "refused response_format" in reason


LESSONS = [
    "plateau lr x0.5: 3 runs of this task, 3 better, median +6% vs projection",
    "plateau weight_decay x2: 2 runs of this task, 2 worse, median -4% vs projection",
    "overfitting weight_decay x2: 4 runs of this task, 3 better, median +5% vs projection",
    "divergence grad_clip =1: 2 runs of this task, 2 better, median +12% vs projection",
    "weak (1 observation): oscillation lr x0.3: 1 run, 1 better, +9% vs projection",
    "weak (1 observation): plateau lr x2: 1 run, 1 worse, -7% vs projection",
    "weak (1 observation): imbalance loss.aux x0.5: 1 run, 1 better, +3% vs projection",
]
"""More lessons than the default ``memory.prompt_tokens`` (120) holds."""


def busy_context() -> PolicyContext:
    """20 metrics, three earlier decisions with their changes and effects, and more memory
    than its budget holds."""
    changes, past = [], []
    for i, (knob_name, before, after) in enumerate(
        [("lr", 3e-3, 2e-3), ("lr", 2e-3, 1e-3), ("weight_decay", 0.02, 0.01)]
    ):
        step = 1000 + 1000 * i
        changes.append(
            LedgerRow(
                seq=i,
                step=step + 1,
                wall_time=0.0,
                decision="applied",
                knob=knob_name,
                before=before,
                after=after,
                source="ai",
                proposal_id=f"d{step}",
            )  # fmt: skip
        )
        past.append(
            PastDecision(
                step=step,
                diagnosis=f"val/loss has not improved for 400 steps (best 0.41 at step {step - 400}"
                "); its trend projects -0.31% per 400 steps, below the 1.00% that counts",
                actions=[f"{knob_name}={after} (kernel)"],
                effect="val/loss +2% vs projection (neutral)",
                decision_id=f"d{step}",
            )
        )
    return context(
        table=table_of(METRICS),
        recent_changes=changes,
        past_decisions=past,
        memory_notes="\n".join(LESSONS),
    )


def test_a_20_metric_decision_with_full_memory_stays_within_its_token_budget(llm_settings, run_dir):
    """A size guard on token counts (benchmarks/prompt_size.py reports the figures): both
    calls, their schemas, and a memory section filled to ``memory.prompt_tokens``. The
    summary table is sized in ``tests/autopilot/test_summary.py``."""
    ctx = busy_context()
    policy = policy_for(llm_settings, run_dir)
    requests: list[Request[Any]] = [
        policy.analyst_request(ctx),
        policy.planner_request(ctx, ANALYSIS),
    ]
    analyst = requests[0].messages[1]["content"]
    memory = analyst.split("Notes from earlier runs:\n")[1]
    assert memory.startswith(f"- {LESSONS[0]}\n") and LESSONS[-1] not in memory
    assert count_tokens(memory) <= llm_settings.memory.prompt_tokens == 120
    messages = sum(count_message_tokens(r.messages) for r in requests)
    schemas = sum(count_tokens(r.schema_text) for r in requests)
    table = count_tokens(ctx.summary_table)
    print(f"20-metric decision: {messages} message + {schemas} schema tokens; table {table}")
    # every metric of this table trends, so each has a full row: the worst case (the
    # benchmark's run, with steady monitors on one line, takes 270)
    assert table <= 430 and messages - table <= 760 and schemas <= 260  # v4: 417, 740, 258


def test_memory_lines_beyond_the_budget_are_cut_whole(make_settings, run_dir):
    for budget in (0, 20, 60, 1000):
        settings = make_settings(memory={"prompt_tokens": budget})
        ctx = context(memory_notes="\n".join(LESSONS))
        analyst = policy_for(settings, run_dir).analyst_request(ctx).messages[1]["content"]
        memory = analyst.split("Notes from earlier runs:\n")[1]
        lines = [line.removeprefix("- ") for line in memory.splitlines()]
        if budget < count_tokens(f"- {LESSONS[0]}"):
            assert lines == ["none"]
            continue
        assert lines == LESSONS[: len(lines)]  # whole lines, best first
        assert count_tokens(memory) <= budget
        if len(lines) < len(LESSONS):  # the next one would not have fit
            assert count_tokens(memory + f"\n- {LESSONS[len(lines)]}") > budget


def test_no_memory_says_none(llm_settings, run_dir):
    analyst = policy_for(llm_settings, run_dir).analyst_request(context(memory_notes=" \n "))
    assert analyst.messages[1]["content"].endswith("Notes from earlier runs:\nnone")
