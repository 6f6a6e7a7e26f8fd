"""A chat client that returns validated pydantic objects, or raises one ``LLMError``.

``LLMClient.structured`` asks an OpenAI-compatible provider for JSON that fits a schema:

* it asks for ``response_format=json_schema`` (a non-strict schema carrying the value
  ranges). With ``llm.response_format = "auto"``, a provider that refuses it (any HTTP 400,
  422 or 5xx before it has accepted a format: llama-cpp-python answers 500) is asked again
  at once in JSON mode with the schema, then in plain JSON mode; the format that works is
  remembered per provider and said once (a warning, and ``LLMReply.note`` for the
  decision's record). See ``autopilot.llm.formats``;
* a reply that is not JSON or does not fit the schema (or a body that is no chat
  completion at all) gets ONE repair request that quotes the error; a second bad reply
  raises ``LLMError(kind="invalid_output")``;
* rate limits (429), server errors (5xx) and refused connections are retried up to
  ``llm.max_retries`` times, honouring ``Retry-After``: the provider bills none of them.
  A timeout is never retried, because the provider may have run (and billed) the call;
  it is counted at its worst case.

The ``openai`` client's own retries are off (``max_retries=0``) so that every request the
provider may bill is known here and fits the budget's reservation (see ``ATTEMPTS``).
Every reply and every error carries its ``Usage``, so the budget can charge it.

Example (needs a provider, hence skipped as a doctest):
    >>> client = LLMClient(settings.llm, api_key)  # doctest: +SKIP
    >>> reply = client.structured(messages, AnalystOutput)  # doctest: +SKIP
    >>> reply.parsed.kind, reply.usage.tokens_in, reply.usage.reported  # doctest: +SKIP
    ('plateau', 812, True)
"""

from __future__ import annotations

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
from autopilot.llm.formats import Format, Provider, ProviderFormats, response_format_for
from autopilot.tokens import Usage, count_message_tokens

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Message = dict[str, str]

ATTEMPTS = 2
"""Billable requests one ``structured`` call may make: the answer and one repair."""
_MAX_BACKOFF_S = 8.0
_MAX_RETRY_AFTER_S = 60.0
_REFUSALS = (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError)
"""The answers that count as refusing a response format the provider has never accepted."""


@dataclass(frozen=True, kw_only=True)
class LLMReply(Generic[M]):
    """A validated answer and what it cost, summed over every request it took."""

    parsed: M
    usage: Usage
    note: str | None = None
    """Set on the reply whose call found that the provider refuses a response format."""


@dataclass(kw_only=True)
class _Tally:
    """Usage of one ``structured`` call so far, and the note it leaves."""

    usage: Usage
    note: str | None = None

    def add(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    def request(self) -> None:
        self.usage = self.usage + Usage(calls=1)

    def error(self, kind: LLMErrorKind, message: str) -> LLMError:
        return LLMError(kind, message, usage=self.usage, note=self.note)


class LLMClient:
    """Structured chat calls to one OpenAI-compatible provider.

    Args:
        settings: provider URL, model, timeout, retries, output limit, response format.
        api_key: the key itself (a local provider accepts any non-empty string).
        http_client: an ``httpx`` client for the ``openai`` client (tests, proxies).
        formats: where the format each provider accepted is remembered; share one between
            clients of the same providers (by default each client has its own).
    """

    def __init__(
        self,
        settings: LLMSettings,
        api_key: str,
        *,
        http_client: Any = None,
        formats: ProviderFormats | None = None,
    ) -> None:
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
        self._formats = formats or ProviderFormats()
        self._provider: Provider = (settings.base_url or "", settings.model)

    @property
    def response_format(self) -> Format:
        """The format the next request asks for: the first not yet refused."""
        return self._candidates()[0]

    def structured(
        self, messages: Sequence[Message], schema: type[M], *, max_tokens: int | None = None
    ) -> LLMReply[M]:
        """Ask for a reply that validates as ``schema``.

        Every request carries ``max_tokens``: ``max_tokens`` if given, at most
        ``llm.max_output_tokens``. A provider that reports more output tokens than that is
        not asked again in this call (``kind="bad_request"``).

        Raises:
            LLMError: with ``kind`` saying why, and the ``Usage`` the call consumed.
        """
        # never more than the setting: the budget reserved the worst case at that many
        limit = min(
            max_tokens or self._settings.max_output_tokens, self._settings.max_output_tokens
        )
        tally = _Tally(usage=Usage())
        conversation = list(messages)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                parsed = self._attempt(conversation, schema, limit, tally)
            except InvalidReply as bad:
                logger.warning("LLM reply %d/%d unusable: %s", attempt, ATTEMPTS, bad.problem)
                problem = bad.problem
                conversation = _replies.repair(messages, bad, limit, self._settings.model)
                continue
            return LLMReply(parsed=parsed, usage=tally.usage, note=tally.note)
        raise tally.error("invalid_output", f"invalid output twice: {problem}")

    def _attempt(
        self, conversation: list[Message], schema: type[M], limit: int, tally: _Tally
    ) -> M:
        response = self._request(conversation, schema, limit, tally)
        usage = _replies.usage(response, conversation, self._settings.model)
        tally.add(usage)
        if usage.tokens_out > limit:
            # it ignores the cap the budget's worst case rests on: no repair, no more spend
            raise tally.error(
                "bad_request",
                f"provider reported {usage.tokens_out} output tokens for a request with "
                f"max_tokens {limit}, so its cost cannot be bounded; not asked again in this "
                "call (check llm.base_url and llm.model)",
            )
        return _replies.validate(_replies.content(response), schema)

    def _candidates(self) -> tuple[Format, ...]:
        return self._formats.candidates(self._provider, self._settings.response_format)

    def _request(
        self, conversation: list[Message], schema: type[BaseModel], limit: int, tally: _Tally
    ) -> object:
        """One billable request: transient failures retried, a refused format replaced."""
        retries = 0
        candidates = self._candidates()
        refused: list[tuple[Format, int]] = []
        transient: openai.OpenAIError
        while True:
            tally.request()
            try:
                response = self._create(conversation, schema, limit, candidates[0])
            except openai.APITimeoutError:
                worst = count_message_tokens(conversation, self._settings.model)
                tally.add(Usage(tokens_in=worst, tokens_out=limit, reported=False))
                raise tally.error("timeout", self._timeout_message()) from None
            except _REFUSALS as exc:
                if self._is_refusal(candidates):
                    refused.append((candidates[0], exc.status_code))
                    candidates = candidates[1:]
                    continue
                if not isinstance(exc, openai.InternalServerError):
                    raise tally.error("bad_request", _status_message(exc)) from None
                transient = exc  # retried below, once the except block has closed
            except (openai.RateLimitError, openai.APIConnectionError) as exc:
                transient = exc
            except openai.APIStatusError as exc:
                raise tally.error(_status_kind(exc), _status_message(exc)) from None
            except (openai.OpenAIError, ValueError, TypeError, AttributeError) as exc:
                # e.g. a 200 whose body is not JSON: the prompt may still have been billed
                sent = count_message_tokens(conversation, self._settings.model)
                tally.add(Usage(tokens_in=sent, reported=False))
                raise InvalidReply(f"the provider's response could not be read ({exc})") from None
            else:
                self._accepted(candidates[0], refused, tally)
                return response
            retries = self._back_off(transient, retries, tally)

    def _is_refusal(self, candidates: tuple[Format, ...]) -> bool:
        """An error answer refuses the format while the provider has accepted none and
        another format is left to try (see ``autopilot.llm.formats``)."""
        return len(candidates) > 1 and self._formats.accepted(self._provider) is None

    def _accepted(self, fmt: Format, refused: list[tuple[Format, int]], tally: _Tally) -> None:
        """Remember the format the provider accepted; say so once if others were refused."""
        if self._formats.accepted(self._provider) == fmt:
            return
        self._formats.remember(self._provider, fmt)
        if not refused:
            return
        where = self._settings.base_url or "the default OpenAI endpoint"
        tried = ", ".join(f"{f} (HTTP {code})" for f, code in refused)
        tally.note = (
            f"provider {where} ({self._settings.model}) refused response_format {tried}; "
            f"using {fmt} from now on"
        )
        logger.warning("%s (set llm.response_format to skip the refused requests)", tally.note)

    def _create(
        self, conversation: list[Message], schema: type[BaseModel], limit: int, fmt: Format
    ) -> object:
        return self._openai.chat.completions.create(
            model=self._settings.model,
            messages=cast(Any, conversation),
            max_tokens=limit,
            temperature=self._settings.temperature,
            response_format=cast(Any, response_format_for(schema, fmt)),
        )

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
