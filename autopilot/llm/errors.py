"""Errors of the LLM layer, each carrying the ``Usage`` it had already consumed.

``LLMError`` is what the client raises for any failed call; ``LLMUnavailable`` is what the
LLM policy raises so that the graph falls back to the rules and records ``reason``.
"""

from __future__ import annotations

from typing import Literal

from autopilot.errors import AutopilotError
from autopilot.tokens import Usage

LLMErrorKind = Literal[
    "timeout", "rate_limit", "server", "connection", "auth", "bad_request", "invalid_output"
]


class LLMError(AutopilotError):
    """A chat call failed for good (after the allowed retries and the one repair).

    Args:
        kind: what went wrong, for metrics and tests.
        message: one line saying what happened and what to do about it.
        usage: the tokens and requests the failed call consumed (to be charged).
        note: set when the call found that the provider refuses a response format (see
            ``LLMReply.note``): said once, even by a call that then failed.
    """

    def __init__(
        self,
        kind: LLMErrorKind,
        message: str,
        *,
        usage: Usage | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: LLMErrorKind = kind
        self.message = message
        self.usage = usage or Usage()
        self.note = note


class LLMUnavailable(AutopilotError):
    """The LLM policy cannot propose now; the graph falls back to the rules.

    Args:
        reason: one line for the decision record, e.g. ``"provider timed out after 30 s"``.
        usage: what this decision's calls consumed before giving up, ``cost_usd`` as
            charged to the budget.
        provider_failed: the provider was asked and failed (not: no key, no budget), so it
            deserves a rest before the next request.
    """

    def __init__(
        self, reason: str, *, usage: Usage | None = None, provider_failed: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason, self.provider_failed = reason, provider_failed
        self.usage = usage or Usage()
