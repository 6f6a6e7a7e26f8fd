"""The budget cap holds against a provider that reports more usage than the worst case: every
request carries ``max_tokens`` no larger than ``llm.max_output_tokens``, a provider that
bills past it is not asked again in that call, and once actual spend reaches a cap no
further request is sent, whatever the estimate said."""

from __future__ import annotations

import pytest
from llm_server import answer, rejects_json_schema
from test_llm_policy import PLATEAU, context, policy_for

from autopilot.budget import Budget
from autopilot.llm import AnalystOutput, LLMClient, LLMError
from autopilot.policies.llm import LLMUnavailable

MESSAGES = [
    {"role": "system", "content": "You are the analyst. Reply with one JSON object only."},
    {"role": "user", "content": "Step 900. val/loss flat for 400 steps."},
]


def test_every_request_carries_max_tokens_within_the_setting(llm_server, llm_settings):
    assert llm_settings.llm.max_output_tokens == 300
    # a refused schema, then a broken reply and its repair, in each call
    llm_server.script(rejects_json_schema(answer("not json")))
    client = LLMClient(llm_settings.llm, "test-key")
    with pytest.raises(LLMError):
        client.structured(MESSAGES, AnalystOutput, max_tokens=10_000)  # a caller asks for more
    with pytest.raises(LLMError):
        client.structured(MESSAGES, AnalystOutput)
    assert len(llm_server.calls) == 5
    assert [c["max_tokens"] for c in llm_server.calls] == [300] * len(llm_server.calls)


def test_a_provider_billing_past_max_tokens_is_not_asked_again(llm_server, llm_settings):
    llm_server.script(answer("not json", completion_tokens=25_000), answer(PLATEAU))
    client = LLMClient(llm_settings.llm, "test-key")
    with pytest.raises(LLMError) as caught:
        client.structured(MESSAGES, AnalystOutput)
    assert len(llm_server.calls) == 1  # no repair request
    assert caught.value.usage.tokens_out == 25_000  # charged as reported
    assert (
        "25000 output tokens" in caught.value.message and "max_tokens 300" in caught.value.message
    )


def test_no_request_once_actual_spend_reaches_the_cap(llm_server, make_settings, run_dir):
    cap = 0.05  # room for the analyst's and the planner's worst cases
    # the analyst's answer is billed at 2,000,000 prompt tokens: $2 at $1 per million
    llm_server.script(answer(PLATEAU, prompt_tokens=2_000_000))
    settings = make_settings(budget={"per_run_usd": cap, "min_steps_between_calls": 0})
    policy = policy_for(settings, run_dir)
    reasons = []
    for _ in range(5):
        with pytest.raises(LLMUnavailable) as caught:
            policy.propose(context())
        reasons.append(caught.value.reason)
    assert len(llm_server.calls) == 1  # the planner, and every later analyst, never asked
    assert all(r.startswith("budget: per-run cap $0.050000") for r in reasons)
    assert Budget(run_dir, settings).spent_run() == pytest.approx(2.0 + 40 * 2.0 / 1e6)
