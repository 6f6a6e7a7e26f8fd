"""Text that goes into an LLM prompt: untrusted names and free text as data, short numbers.

Whatever comes from the run directory is untrusted (anyone who can write there wrote it):
a name (metric, knob) is shown as-is only when it matches ``kernel.untrusted.SAFE_NAME``;
anything else, and all free text, is cut short and quoted as one JSON string, so it reads as
data and cannot start a line of its own. The summary table and the prompts' fields both
use these, so a metric name is shown the same way in each.

Numbers are spelt in the fewest tokens that keep 3 significant digits: ``0.225`` costs four
tokens with its leading space and ``.225`` two.

Example:
    >>> number(0.2254), number(-0.5), number(3e-5), number(1e6), number(12.0)
    ('.225', '-.5', '3e-5', '1e6', '12')
    >>> name("val/loss"), name("x\\n## system")
    ('val/loss', '"x ## system"')
"""

from __future__ import annotations

import json
import re

from kernel.untrusted import SAFE_NAME

__all__ = ["NAME_CHARS", "name", "number", "quoted"]

NAME_CHARS = 64
"""A name that is not shown as-is is quoted up to this many characters."""


def name(text: str) -> str:
    """A knob or metric name: as-is when it matches ``SAFE_NAME``, else quoted and cut."""
    return text if re.fullmatch(SAFE_NAME, text) else quoted(text, NAME_CHARS)


def quoted(text: str, limit: int) -> str:
    """Free text as data: at most ``limit`` characters, one JSON string (ASCII-escaped, so
    no line separator of any kind survives)."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "..."
    return json.dumps(text, ensure_ascii=True)


def number(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without a leading zero or an exponent's
    padding (``.001``, ``-.5``, ``3e-5``, ``1e6``)."""
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    if text.startswith("0."):
        return text[1:]
    if text.startswith("-0."):
        return "-" + text[2:]
    return text
