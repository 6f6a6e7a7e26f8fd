"""How a request asks for JSON (``response_format``), and which way each provider accepts.

Providers disagree on structured output. OpenAI (and vLLM, SGLang, recent llama.cpp
``llama-server``) take ``{"type": "json_schema", "json_schema": {...}}``; the stock
llama-cpp-python server accepts only ``text`` and ``json_object`` and answers a schema with
an HTTP 500 (422 in other versions), but it does constrain its grammar to a JSON schema
given as ``{"type": "json_object", "schema": {...}}`` (the convention of Anyscale and
Together too); some providers take nothing beyond ``{"type": "json_object"}``.

With ``llm.response_format = "auto"`` the client walks ``LADDER`` until a format is
accepted. Any HTTP 400, 422 or 5xx to a format the provider has never accepted counts as a
refusal of that format, whatever its text says (no error text is parsed): the next format is
tried at once, and the one that works is remembered per provider (base URL and model), so
later calls skip the refused ones. Once a provider has accepted a format, its 5xx answers
are transient failures again.

Example:
    >>> memory = ProviderFormats()
    >>> memory.candidates(("http://127.0.0.1:8080/v1", "smollm2"), "auto")
    ('json_schema', 'json_object+schema', 'json_object')
    >>> memory.remember(("http://127.0.0.1:8080/v1", "smollm2"), "json_object+schema")
    >>> memory.candidates(("http://127.0.0.1:8080/v1", "smollm2"), "auto")
    ('json_object+schema',)
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from pydantic import BaseModel

Format = Literal["json_schema", "json_object+schema", "json_object"]
Setting = Literal["auto", "json_schema", "json_object"]
"""``llm.response_format``: ``auto`` walks ``LADDER``; the others are used alone."""
Provider = tuple[str, str]
"""``(base_url, model)``: ``base_url`` is "" for the ``openai`` client's default endpoint."""

LADDER: tuple[Format, ...] = ("json_schema", "json_object+schema", "json_object")
"""The formats ``auto`` tries, most constraining first."""


def response_format_for(schema: type[BaseModel], fmt: Format = "json_schema") -> dict[str, Any]:
    """The ``response_format`` a request sends for ``schema`` in format ``fmt``.

    ``schema.model_json_schema()`` is the compact schema of ``autopilot.llm.schemas``."""
    if fmt == "json_object":
        return {"type": "json_object"}
    if fmt == "json_object+schema":
        return {"type": "json_object", "schema": schema.model_json_schema()}
    # no "strict": false is OpenAI's default, and strict mode would refuse optional fields
    spec = {"name": schema.__name__, "schema": schema.model_json_schema()}
    return {"type": "json_schema", "json_schema": spec}


class ProviderFormats:
    """The format each provider has accepted; shared by every client that is given it.

    Thread-safe: ``autopilot serve`` may tick several runs at once against one provider.
    """

    def __init__(self) -> None:
        self._accepted: dict[Provider, Format] = {}
        self._lock = threading.Lock()

    def candidates(self, provider: Provider, setting: Setting) -> tuple[Format, ...]:
        """The formats to try, in order: the accepted one, or all that ``setting`` allows."""
        if setting != "auto":
            return (setting,)
        with self._lock:
            accepted = self._accepted.get(provider)
        return (accepted,) if accepted else LADDER

    def accepted(self, provider: Provider) -> Format | None:
        """The format ``provider`` accepted, or None while none has been."""
        with self._lock:
            return self._accepted.get(provider)

    def remember(self, provider: Provider, fmt: Format) -> None:
        with self._lock:
            self._accepted[provider] = fmt
