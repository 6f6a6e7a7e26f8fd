"""Reading a provider's reply: its text, its usage, its validation, and the repair request.

Providers answer in many broken ways (an HTML error page with status 200, ``{}``, no
choices, JSON wrapped in a Markdown fence, no ``usage``); each becomes an ``InvalidReply``
with a one-line ``problem``, or a usage estimate, never a stray ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from autopilot.budget import RETRY_OVERHEAD
from autopilot.tokens import Usage, count_message_tokens, count_tokens, encoding_for
from kernel.validation import summarize_validation_error

M = TypeVar("M", bound=BaseModel)
Message = dict[str, str]

_PROBLEM_TOKENS = RETRY_OVERHEAD - 50
"""The error quoted in a repair request, so the request fits the budget's estimate."""


class InvalidReply(Exception):
    """A reply that cannot be used: ``problem`` says why, ``content`` is its text if any."""

    def __init__(self, problem: str, content: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.content = content


def content(response: object) -> str:
    """The text of the first choice.

    Raises:
        InvalidReply: when the response is no chat completion or carries no text.
    """
    if not isinstance(response, ChatCompletion):
        preview = " ".join(str(response).split())[:80]
        raise InvalidReply(f"the provider's response is not a chat completion: {preview!r}")
    if not response.choices:
        raise InvalidReply("the provider's response has no choices")
    choice = response.choices[0]
    text = getattr(getattr(choice, "message", None), "content", None)
    if not isinstance(text, str) or not text.strip():
        reason = getattr(choice, "finish_reason", None)
        raise InvalidReply(f"the reply has no text (finish_reason={reason})")
    return text


def validate(text: str, schema: type[M]) -> M:
    """``text`` parsed as JSON and validated as ``schema``.

    Raises:
        InvalidReply: with the validation errors, one line.
    """
    try:
        return schema.model_validate_json(_json_part(text))
    except ValidationError as exc:
        raise InvalidReply(summarize_validation_error(exc), text) from None


def usage(response: object, conversation: Sequence[Message], model: str | None) -> Usage:
    """The provider's token counts (``calls`` 0), or offline estimates when it left them out."""
    reported = getattr(response, "usage", None)
    tokens_in = getattr(reported, "prompt_tokens", None)
    tokens_out = getattr(reported, "completion_tokens", None)
    if (
        isinstance(tokens_in, int)
        and isinstance(tokens_out, int)
        and min(tokens_in, tokens_out) >= 0
    ):
        details = getattr(reported, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None)
        cached_in = min(cached, tokens_in) if isinstance(cached, int) else 0
        return Usage(tokens_in=tokens_in, tokens_out=tokens_out, cached_in=max(cached_in, 0))
    try:
        text = content(response)
    except InvalidReply:
        text = ""
    return Usage(
        tokens_in=count_message_tokens(conversation, model),
        tokens_out=count_tokens(text, model),
        reported=False,
    )


def repair(
    messages: Sequence[Message], bad: InvalidReply, limit: int, model: str | None
) -> list[Message]:
    """The original messages, the bad reply (if it had text) and a request to correct it."""
    extra = []
    if bad.content:
        extra.append({"role": "assistant", "content": clip_tokens(bad.content, limit, model)})
    problem = clip_tokens(bad.problem, _PROBLEM_TOKENS, model)
    extra.append(
        {
            "role": "user",
            "content": f"That reply could not be used: {problem}\n"
            "Reply again with only the corrected JSON object.",
        }
    )
    return [*messages, *extra]


def clip_tokens(text: str, limit: int, model: str | None) -> str:
    """``text`` cut to at most ``limit`` tokens."""
    encoding = encoding_for(model)
    ids = encoding.encode(text, disallowed_special=())
    return text if len(ids) <= limit else encoding.decode(ids[:limit])


def _json_part(text: str) -> str:
    """The JSON object in ``text``, without a Markdown fence or chatter around it."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0].strip()
    start, end = body.find("{"), body.rfind("}")
    if not body.startswith("{") and 0 <= start < end:
        body = body[start : end + 1]
    return body
