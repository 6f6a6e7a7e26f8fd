"""Errors of the LLM layer, each carrying the tokens it had already consumed.

``LLMError`` is what the client raises for any failed call; ``LLMUnavailable`` is what the
LLM policy raises so that the graph falls back to the rules and records ``reason``.
"""

from __future__ import annotations

from typing import Literal

from autopilot.errors import AutopilotError

LLMErrorKind = Literal[
    "timeout", "rate_limit", "server", "connection", "auth", "bad_request", "invalid_output"
]


class LLMError(AutopilotError):
    """A chat call failed for good (after the allowed retries and the one repair).

    Args:
        kind: what went wrong, for metrics and tests.
        message: one line saying what happened and what to do about it.
        tokens_in: input tokens the failed call consumed (to be charged).
        tokens_out: output tokens the failed call consumed (to be charged).
        cached_in: of ``tokens_in``, how many the provider served from its cache.
        usage_reported: False when some of those counts are estimates.
        calls: HTTP requests made.
    """

    def __init__(
        self,
        kind: LLMErrorKind,
        message: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cached_in: int = 0,
        usage_reported: bool = True,
        calls: int = 0,
    ) -> None:
        super().__init__(message)
        self.kind: LLMErrorKind = kind
        self.message = message
        self.tokens_in, self.tokens_out, self.cached_in = tokens_in, tokens_out, cached_in
        self.usage_reported = usage_reported
        self.calls = calls


class LLMUnavailable(AutopilotError):
    """The LLM policy cannot propose now; the graph falls back to the rules.

    Args:
        reason: one line for the decision record, e.g. ``"provider timed out after 30 s"``.
        tokens_in: input tokens spent before giving up (all calls of this decision).
        tokens_out: output tokens spent before giving up.
        cost_usd: what those tokens cost, as charged to the budget.
        provider_failed: the provider was asked and failed (not: no key, no budget), so it
            deserves a rest before the next request.
    """

    def __init__(
        self,
        reason: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        provider_failed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason, self.provider_failed = reason, provider_failed
        self.tokens_in, self.tokens_out, self.cost_usd = tokens_in, tokens_out, cost_usd
