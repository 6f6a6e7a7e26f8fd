"""A chat client that returns validated pydantic objects, or raises one ``LLMError``.

``LLMClient.structured`` asks an OpenAI-compatible provider for JSON that fits a schema:

* it asks for ``response_format=json_schema`` (a non-strict schema). A provider that
  rejects that (HTTP 400/422 naming the response format) is asked again in JSON mode,
  and the client remembers this for later calls (``llm.response_format = "auto"``);
* a reply that is not JSON or does not fit the schema (or a body that is no chat
  completion at all) gets ONE repair request that quotes the error; a second bad reply
  raises ``LLMError(kind="invalid_output")``;
* rate limits (429), server errors (5xx) and refused connections are retried up to
  ``llm.max_retries`` times, honouring ``Retry-After``: the provider bills none of them.
  A timeout is never retried, because the provider may have run (and billed) the call;
  it is counted at its worst case.

The ``openai`` client's own retries are off (``max_retries=0``) so that every request the
provider may bill is known here and fits the budget's reservation (see ``ATTEMPTS``).
Every error carries the tokens the failed call consumed, so the budget can charge them.

Example (needs a provider, hence skipped as a doctest):
    >>> client = LLMClient(settings.llm, api_key)  # doctest: +SKIP
    >>> reply = client.structured(messages, AnalystOutput)  # doctest: +SKIP
    >>> reply.parsed.kind, reply.tokens_in, reply.usage_reported  # doctest: +SKIP
    ('plateau', 812, True)
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import openai
from pydantic import BaseModel

from autopilot.config import LLMSettings
from autopilot.llm import _replies
from autopilot.llm._replies import InvalidReply
from autopilot.llm.errors import LLMError, LLMErrorKind
from autopilot.tokens import count_message_tokens

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Message = dict[str, str]

ATTEMPTS = 2
"""Billable requests one ``structured`` call may make: the answer and one repair."""
_MAX_BACKOFF_S = 8.0
_MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, kw_only=True)
class LLMReply(Generic[M]):
    """A validated answer and what it cost, summed over every request it took."""

    parsed: M
    tokens_in: int
    tokens_out: int
    cached_in: int = 0
    usage_reported: bool = True
    """False when the provider left ``usage`` out and some counts are estimates."""
    calls: int = 1
    """HTTP requests made (retries, format fallback and repair included)."""


@dataclass(kw_only=True)
class _Tally:
    """Tokens and requests of one ``structured`` call so far."""

    tokens_in: int = 0
    tokens_out: int = 0
    cached_in: int = 0
    usage_reported: bool = True
    calls: int = 0

    def add(self, tokens_in: int, tokens_out: int, cached_in: int, reported: bool) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cached_in += cached_in
        self.usage_reported = self.usage_reported and reported

    def error(self, kind: LLMErrorKind, message: str) -> LLMError:
        return LLMError(
            kind,
            message,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cached_in=self.cached_in,
            usage_reported=self.usage_reported,
            calls=self.calls,
        )


class LLMClient:
    """Structured chat calls to one OpenAI-compatible provider.

    Args:
        settings: provider URL, model, timeout, retries, output limit, response format.
        api_key: the key itself (a local provider accepts any non-empty string).
        http_client: an ``httpx`` client for the ``openai`` client (tests, proxies).
    """

    def __init__(self, settings: LLMSettings, api_key: str, *, http_client: Any = None) -> None:
        if not api_key:
            raise LLMError("auth", f"no API key: set {settings.api_key_env}")
        self._settings = settings
        self._openai = openai.OpenAI(
            base_url=settings.base_url,
            api_key=api_key,
            timeout=settings.timeout_s,
            max_retries=0,
            http_client=http_client,
        )
        self._format = "json_object" if settings.response_format == "json_object" else "json_schema"

    @property
    def response_format(self) -> str:
        """``json_schema`` until the provider refuses it, then ``json_object``."""
        return self._format

    def structured(
        self, messages: Sequence[Message], schema: type[M], *, max_tokens: int | None = None
    ) -> LLMReply[M]:
        """Ask for a reply that validates as ``schema``.

        Raises:
            LLMError: with ``kind`` saying why, and the tokens the call consumed.
        """
        limit = max_tokens or self._settings.max_output_tokens
        tally = _Tally()
        conversation = list(messages)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                parsed = self._attempt(conversation, schema, limit, tally)
            except InvalidReply as bad:
                logger.warning("LLM reply %d/%d unusable: %s", attempt, ATTEMPTS, bad.problem)
                problem = bad.problem
                conversation = _replies.repair(messages, bad, limit, self._settings.model)
                continue
            return LLMReply(
                parsed=parsed,
                tokens_in=tally.tokens_in,
                tokens_out=tally.tokens_out,
                cached_in=tally.cached_in,
                usage_reported=tally.usage_reported,
                calls=tally.calls,
            )
        raise tally.error("invalid_output", f"invalid output twice: {problem}")

    def _attempt(
        self, conversation: list[Message], schema: type[M], limit: int, tally: _Tally
    ) -> M:
        response = self._request(conversation, schema, limit, tally)
        model = self._settings.model
        tally.add(*_replies.usage(response, conversation, model))
        return _replies.validate(_replies.content(response), schema)

    def _request(
        self, conversation: list[Message], schema: type[BaseModel], limit: int, tally: _Tally
    ) -> object:
        """One billable request: transient failures retried, a refused format replaced."""
        retries = 0
        transient: openai.OpenAIError
        while True:
            tally.calls += 1
            try:
                return self._create(conversation, schema, limit)
            except openai.APITimeoutError:
                worst = count_message_tokens(conversation, self._settings.model)
                tally.add(worst, limit, 0, reported=False)
                raise tally.error("timeout", self._timeout_message()) from None
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
            ) as exc:
                transient = exc  # retried below, once the except block has closed
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if not self._fall_back_from(exc):
                    raise tally.error("bad_request", _status_message(exc)) from None
                continue
            except openai.APIStatusError as exc:
                raise tally.error(_status_kind(exc), _status_message(exc)) from None
            except (openai.OpenAIError, ValueError, TypeError, AttributeError) as exc:
                # e.g. a 200 whose body is not JSON: the prompt may still have been billed
                sent = count_message_tokens(conversation, self._settings.model)
                tally.add(sent, 0, 0, reported=False)
                raise InvalidReply(f"the provider's response could not be read ({exc})") from None
            retries = self._back_off(transient, retries, tally)

    def _create(self, conversation: list[Message], schema: type[BaseModel], limit: int) -> object:
        return self._openai.chat.completions.create(
            model=self._settings.model,
            messages=cast(Any, conversation),
            max_tokens=limit,
            temperature=self._settings.temperature,
            response_format=cast(Any, self._format_param(schema)),
        )

    def _format_param(self, schema: type[BaseModel]) -> dict[str, Any]:
        return response_format_for(schema, self._format)

    def _fall_back_from(self, exc: openai.APIStatusError) -> bool:
        """Switch to JSON mode if ``exc`` refuses the response format and the config allows."""
        text = f"{exc} {json.dumps(exc.body, default=str)}".lower()
        refused = "response_format" in text or "json_schema" in text
        if not refused or self._format != "json_schema" or self._settings.response_format != "auto":
            return False
        logger.warning(
            "provider refused response_format=json_schema (HTTP %s); using json_object from now "
            'on (set llm.response_format = "json_object" to skip this request)',
            exc.status_code,
        )
        self._format = "json_object"
        return True

    def _back_off(self, exc: openai.OpenAIError, retries: int, tally: _Tally) -> int:
        """Sleep before retry ``retries + 1``, or raise once the retries are used up."""
        if retries >= self._settings.max_retries:
            kind, message = self._transient_failure(exc, retries + 1)
            raise tally.error(kind, message) from None
        delay = _retry_delay(exc, retries)
        logger.info("LLM request failed (%s); retrying in %.2f s", type(exc).__name__, delay)
        time.sleep(delay)
        return retries + 1

    def _transient_failure(self, exc: BaseException, tries: int) -> tuple[LLMErrorKind, str]:
        if isinstance(exc, openai.RateLimitError):
            return "rate_limit", (
                f"provider rate-limited the call (HTTP 429) {tries} time(s); wait, or raise "
                "llm.max_retries"
            )
        if isinstance(exc, openai.APIStatusError):
            return "server", f"provider failed with HTTP {exc.status_code} {tries} time(s)"
        where = self._settings.base_url or "the default OpenAI endpoint"
        return "connection", f"cannot reach the provider at {where}: {exc}; check llm.base_url"

    def _timeout_message(self) -> str:
        return (
            f"provider timed out after {self._settings.timeout_s:g} s; raise llm.timeout_s "
            "if the model is slow"
        )


def response_format_for(schema: type[BaseModel], kind: str = "json_schema") -> dict[str, Any]:
    """The ``response_format`` a request sends: ``schema`` (its compact JSON schema, see
    ``autopilot.llm.schemas``), or plain JSON mode when ``kind`` is ``"json_object"``."""
    if kind == "json_object":
        return {"type": "json_object"}
    spec = {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False}
    return {"type": "json_schema", "json_schema": spec}


def _retry_delay(exc: BaseException, retries: int) -> float:
    """``Retry-After`` (ms or s) if the provider sent a sane one, else exponential backoff."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if 0 <= seconds <= _MAX_RETRY_AFTER_S:
            return seconds
    return min(0.5 * 2.0**retries, _MAX_BACKOFF_S) * (1 - 0.25 * random.random())


def _status_kind(exc: openai.APIStatusError) -> LLMErrorKind:
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    return "server" if exc.status_code >= 500 else "bad_request"


def _status_message(exc: openai.APIStatusError) -> str:
    detail = " ".join(str(getattr(exc, "message", exc)).split())[:300]
    if _status_kind(exc) == "auth":
        return f"provider refused the API key (HTTP {exc.status_code}): {detail}"
    return (
        f"provider rejected the request (HTTP {exc.status_code}): {detail}; check llm.model, "
        "llm.base_url and llm.response_format"
    )
