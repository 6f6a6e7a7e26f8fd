"""LLMClient against the scripted server: every way a provider answers, or fails to."""

from __future__ import annotations

import socket

import pytest
from llm_server import (
    FAST_RETRY,
    answer,
    llama_cpp,
    raw,
    refuses_schemas,
    rejects_json_schema,
    slow,
    status,
)

from autopilot.llm import AnalystOutput, LLMClient, LLMError, PlannerOutput, ProviderFormats
from autopilot.tokens import Usage, count_message_tokens

MESSAGES = [
    {"role": "system", "content": "You are the analyst. Reply with one JSON object only."},
    {"role": "user", "content": "Step 900. val/loss flat for 400 steps."},
]
GOOD = {
    "kind": "plateau",
    "metric": "val/loss",
    "summary": "val/loss has been flat for 400 steps",
    "evidence": ["best 0.41 at step 500"],
    "confidence": 0.8,
}


def client_for(settings, formats: ProviderFormats | None = None, **llm) -> LLMClient:
    llm_settings = settings.llm.model_copy(update=llm)
    return LLMClient(llm_settings, "test-key", formats=formats)


def formats_sent(llm_server) -> list[str]:
    kinds = {"json_schema": "json_schema", "json_object": "json_object"}
    sent = []
    for call in llm_server.calls:
        fmt = call["response_format"]
        sent.append(kinds[fmt["type"]] + ("+schema" if "schema" in fmt else ""))
    return sent


def ask(settings, **llm):
    return client_for(settings, **llm).structured(MESSAGES, AnalystOutput)


def test_a_valid_answer_is_parsed_with_the_reported_usage(llm_server, llm_settings):
    llm_server.script(answer(GOOD, prompt_tokens=100, completion_tokens=30, cached_tokens=60))
    reply = ask(llm_settings)
    assert reply.parsed == AnalystOutput.model_validate(GOOD)
    assert reply.usage == Usage(tokens_in=100, tokens_out=30, cached_in=60, calls=1)
    assert reply.note is None


def test_the_request_asks_for_the_schema_and_the_limits(llm_server, llm_settings):
    llm_server.script(answer(GOOD))
    client_for(llm_settings).structured(MESSAGES, AnalystOutput, max_tokens=123)
    body = llm_server.calls[0]
    assert body["model"] == "test-model" and body["max_tokens"] == 123
    assert body["messages"] == MESSAGES
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "AnalystOutput"
    assert fmt["json_schema"]["schema"] == AnalystOutput.model_json_schema()


def test_json_in_a_markdown_fence_is_accepted(llm_server, llm_settings):
    fenced = '```json\n{"actions": [], "confidence": 0.9, "look_again_steps": 50}\n```'
    llm_server.script(answer(fenced))
    reply = client_for(llm_settings).structured(MESSAGES, PlannerOutput)
    assert reply.parsed.look_again_steps == 50 and reply.usage.calls == 1


def test_malformed_json_gets_one_repair_request_then_succeeds(llm_server, llm_settings):
    llm_server.script(answer('{"kind": "plateau", '), answer(GOOD))
    reply = ask(llm_settings)
    assert reply.parsed.kind == "plateau" and reply.usage.calls == 2
    assert (reply.usage.tokens_in, reply.usage.tokens_out) == (240, 80)  # both are counted
    repair = llm_server.messages(1)
    assert repair[: len(MESSAGES)] == MESSAGES
    assert repair[2] == {"role": "assistant", "content": '{"kind": "plateau", '}
    assert "could not be used" in repair[3]["content"] and "JSON" in repair[3]["content"]


def test_a_wrong_shape_is_named_in_the_repair_request(llm_server, llm_settings):
    llm_server.script(answer({**GOOD, "kind": "stuck", "lr": 0.1}), answer(GOOD))
    assert ask(llm_settings).parsed.kind == "plateau"
    note = llm_server.messages(1)[-1]["content"]
    assert "kind" in note and "lr" in note


def test_invalid_output_twice_raises_with_the_tokens_spent(llm_server, llm_settings):
    llm_server.script(answer("I think the learning rate is too high."))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings)
    err = caught.value
    assert err.kind == "invalid_output" and str(err).startswith("invalid output twice: ")
    assert (err.usage.tokens_in, err.usage.tokens_out, err.usage.calls) == (240, 80, 2)
    assert len(llm_server.calls) == 2


@pytest.mark.parametrize(
    "bad",
    [
        raw("<html><body>502 Bad Gateway</body></html>"),
        raw("{}", media_type="application/json"),
        raw('{"choices": []}', media_type="application/json"),
        raw("this is not json", media_type="application/json"),
        answer(""),
    ],
    ids=["html", "empty-object", "no-choices", "broken-json", "empty-content"],
)
def test_a_broken_body_is_retried_once(llm_server, llm_settings, bad):
    llm_server.script(bad, answer(GOOD))
    reply = ask(llm_settings)
    assert reply.parsed.kind == "plateau" and reply.usage.calls == 2
    assert llm_server.messages(1)[-1]["role"] == "user"


def test_a_broken_body_twice_is_invalid_output(llm_server, llm_settings):
    llm_server.script(raw("<html>oops</html>"))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings)
    assert caught.value.kind == "invalid_output" and "not a chat completion" in str(caught.value)
    assert not caught.value.usage.reported and caught.value.usage.tokens_in > 0


def test_missing_usage_is_estimated_offline(llm_server, llm_settings):
    llm_server.script(answer(GOOD, usage=False))
    reply = ask(llm_settings)
    assert not reply.usage.reported
    assert reply.usage.tokens_in == count_message_tokens(MESSAGES, "test-model")
    assert 20 < reply.usage.tokens_out < 80


def test_429_then_success_is_retried(llm_server, llm_settings):
    llm_server.script(status(429, "slow down", headers=FAST_RETRY), answer(GOOD))
    reply = ask(llm_settings, max_retries=1)
    assert reply.parsed.kind == "plateau" and reply.usage.calls == 2
    assert (reply.usage.tokens_in, reply.usage.tokens_out) == (120, 40)  # a 429 is not billed


def test_429_forever_gives_up_after_the_retries(llm_server, llm_settings):
    llm_server.script(status(429, "slow down", headers=FAST_RETRY))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings, max_retries=2)
    assert caught.value.kind == "rate_limit" and "429" in str(caught.value)
    assert len(llm_server.calls) == 3 and caught.value.usage.tokens_in == 0


def test_a_server_error_fails_with_kind_server(llm_server, llm_settings):
    llm_server.script(status(500, "boom"))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings)
    assert caught.value.kind == "server" and "HTTP 500" in str(caught.value)
    # the provider has accepted no format yet: each was tried once, none is remembered
    assert formats_sent(llm_server) == ["json_schema", "json_object+schema", "json_object"]
    assert caught.value.usage.calls == 3


def test_a_server_error_once_a_format_was_accepted_is_only_retried(llm_server, llm_settings):
    client = client_for(llm_settings, max_retries=1)
    llm_server.script(answer(GOOD), status(500, "boom", headers=FAST_RETRY), answer(GOOD))
    client.structured(MESSAGES, AnalystOutput)
    reply = client.structured(MESSAGES, AnalystOutput)
    assert reply.usage.calls == 2 and reply.note is None
    assert formats_sent(llm_server) == ["json_schema"] * 3


def test_a_rejected_key_fails_with_kind_auth(llm_server, llm_settings):
    llm_server.script(status(401, "invalid api key"))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings, max_retries=2)
    assert caught.value.kind == "auth" and len(llm_server.calls) == 1


def test_a_bad_request_is_tried_once_per_format_and_never_retried(llm_server, llm_settings):
    llm_server.script(status(400, "model 'test-model' does not exist"))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings)
    assert caught.value.kind == "bad_request" and "does not exist" in str(caught.value)
    assert formats_sent(llm_server) == ["json_schema", "json_object+schema", "json_object"]


def test_a_timeout_is_not_retried_and_counts_its_worst_case(llm_server, llm_settings):
    llm_server.script(slow(0.6, answer(GOOD)))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings, timeout_s=0.3, max_retries=2)
    err = caught.value
    assert err.kind == "timeout" and str(err).startswith("provider timed out after 0.3 s")
    assert len(llm_server.calls) == 1 and not err.usage.reported
    assert err.usage.tokens_in == count_message_tokens(MESSAGES, "test-model")
    assert err.usage.tokens_out == llm_settings.llm.max_output_tokens


def test_a_refused_connection_fails_with_kind_connection(llm_settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LLMError) as caught:
        ask(llm_settings, base_url=f"http://127.0.0.1:{port}/v1")
    assert caught.value.kind == "connection" and "llm.base_url" in str(caught.value)


def test_a_refused_json_schema_falls_back_to_json_mode_for_good(llm_server, llm_settings):
    llm_server.script(rejects_json_schema(answer(GOOD)))
    client = client_for(llm_settings)
    reply = client.structured(MESSAGES, AnalystOutput)
    assert reply.parsed.kind == "plateau" and reply.usage.calls == 2
    assert formats_sent(llm_server) == ["json_schema", "json_object+schema"]
    assert llm_server.calls[1]["response_format"]["schema"] == AnalystOutput.model_json_schema()
    assert client.response_format == "json_object+schema"
    again = client.structured(MESSAGES, AnalystOutput)
    assert formats_sent(llm_server)[2:] == ["json_object+schema"] and again.note is None


@pytest.mark.parametrize("code", [500, 422])
def test_llama_cpps_refusal_of_json_schema_is_not_retried_as_transient(
    llm_server, llm_settings, code, caplog
):
    llm_server.script(llama_cpp(answer(GOOD), code=code))
    client = client_for(llm_settings, max_retries=2)
    with caplog.at_level("WARNING", logger="autopilot.llm.client"):
        reply = client.structured(MESSAGES, AnalystOutput)
        client.structured(MESSAGES, AnalystOutput)
    assert reply.parsed.kind == "plateau" and reply.usage.calls == 2
    assert formats_sent(llm_server) == ["json_schema", "json_object+schema", "json_object+schema"]
    assert reply.note == (
        f"provider {llm_settings.llm.base_url} (test-model) refused response_format "
        f"json_schema (HTTP {code}); using json_object+schema from now on"
    )
    said = [r for r in caplog.records if "refused response_format" in r.getMessage()]
    assert len(said) == 1  # said once, not on every call


def test_a_call_that_fails_after_the_switch_still_says_so(llm_server, llm_settings):
    llm_server.script(llama_cpp(answer("not json at all")))
    client = client_for(llm_settings)
    with pytest.raises(LLMError) as caught:
        client.structured(MESSAGES, AnalystOutput)
    assert caught.value.kind == "invalid_output"
    assert "using json_object+schema from now on" in (caught.value.note or "")
    assert client.response_format == "json_object+schema"  # it was accepted: HTTP 200


def test_a_provider_refusing_any_schema_gets_plain_json_mode(llm_server, llm_settings):
    llm_server.script(refuses_schemas(answer(GOOD)))
    reply = ask(llm_settings)
    assert formats_sent(llm_server) == ["json_schema", "json_object+schema", "json_object"]
    assert reply.usage.calls == 3 and "using json_object from now on" in (reply.note or "")


def test_the_accepted_format_is_remembered_per_provider(llm_server, llm_settings):
    shared = ProviderFormats()
    llm_server.script(llama_cpp(answer(GOOD)))
    client_for(llm_settings, shared).structured(MESSAGES, AnalystOutput)
    reply = client_for(llm_settings, shared).structured(MESSAGES, AnalystOutput)
    assert reply.usage.calls == 1 and reply.note is None  # another client, same provider
    other_model = client_for(llm_settings, shared, model="other-model")
    assert other_model.response_format == "json_schema"
    assert len(llm_server.calls) == 3


def test_the_schema_sent_carries_the_ranges_pydantic_enforces(llm_server, llm_settings):
    analyst = AnalystOutput.model_json_schema()["properties"]
    assert analyst["confidence"] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert analyst["evidence"]["maxItems"] == 8
    # no string lengths: llama.cpp's grammar parser fails on the planner's 2000 characters
    assert analyst["summary"] == {"type": "string"}
    planner = PlannerOutput.model_json_schema()["properties"]
    assert planner["confidence"]["minimum"] == 0 and planner["confidence"]["maximum"] == 1
    assert planner["look_again_steps"]["minimum"] == 0
    action = planner["actions"]["items"]["properties"]
    # optional, so its null is to leave it out; validation still takes an explicit null
    assert action["multiplier"] == {"type": "number", "exclusiveMinimum": 0}
    llm_server.script(answer({"actions": [], "confidence": 0.5}))
    client_for(llm_settings).structured(MESSAGES, PlannerOutput)
    sent = llm_server.calls[0]["response_format"]["json_schema"]["schema"]["properties"]
    assert sent["look_again_steps"]["minimum"] == 0 and sent["confidence"]["maximum"] == 1


def test_json_object_mode_from_the_settings_never_sends_a_schema(llm_server, llm_settings):
    llm_server.script(answer(GOOD))
    ask(llm_settings, response_format="json_object")
    assert llm_server.calls[0]["response_format"] == {"type": "json_object"}


def test_an_explicit_json_schema_setting_does_not_fall_back(llm_server, llm_settings):
    llm_server.script(rejects_json_schema(answer(GOOD)))
    with pytest.raises(LLMError) as caught:
        ask(llm_settings, response_format="json_schema")
    assert caught.value.kind == "bad_request" and "llm.response_format" in str(caught.value)
    assert len(llm_server.calls) == 1


def test_an_empty_key_is_refused_before_any_request(llm_server, llm_settings):
    with pytest.raises(LLMError) as caught:
        LLMClient(llm_settings.llm, "")
    assert caught.value.kind == "auth" and "AUTOPILOT_TEST_LLM_KEY" in str(caught.value)
    assert llm_server.calls == []
