"""Calls to an OpenAI-compatible LLM that return validated pydantic objects.

``LLMClient`` makes the calls; ``schemas`` defines what the agents must answer; every
failure is one ``LLMError`` carrying the tokens it consumed.
"""

from autopilot.llm.client import ATTEMPTS, LLMClient, LLMReply
from autopilot.llm.errors import LLMError, LLMErrorKind, LLMUnavailable
from autopilot.llm.schemas import AnalystKind, AnalystOutput, PlannedAction, PlannerOutput

__all__ = [
    "ATTEMPTS",
    "AnalystKind",
    "AnalystOutput",
    "LLMClient",
    "LLMError",
    "LLMErrorKind",
    "LLMReply",
    "LLMUnavailable",
    "PlannedAction",
    "PlannerOutput",
]
