"""Calls to an OpenAI-compatible LLM that return validated pydantic objects.

``LLMClient`` makes the calls; ``schemas`` defines what the agents must answer; ``formats``
how a request asks for JSON and which way each provider accepts; every failure is one
``LLMError`` carrying the ``Usage`` it consumed.
"""

from autopilot.llm.client import ATTEMPTS, LLMClient, LLMReply
from autopilot.llm.errors import LLMError, LLMErrorKind, LLMUnavailable
from autopilot.llm.formats import Format, ProviderFormats, response_format_for
from autopilot.llm.schemas import (
    AnalystKind,
    AnalystOutput,
    PlannedAction,
    PlannerOutput,
    planner_output_for,
)

__all__ = [
    "ATTEMPTS",
    "AnalystKind",
    "AnalystOutput",
    "Format",
    "LLMClient",
    "LLMError",
    "LLMErrorKind",
    "LLMReply",
    "LLMUnavailable",
    "PlannedAction",
    "PlannerOutput",
    "ProviderFormats",
    "planner_output_for",
    "response_format_for",
]
