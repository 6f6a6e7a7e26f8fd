"""The LLM call outside the tick: one in flight at a time, its answer picked up by a later tick.

A provider that hangs for its whole ``timeout_s`` must not delay a rescue: the tick that
starts a call returns at once, the call runs in a daemon thread owned by the
``TickContext``, and a later tick takes its outcome and judges it with the run as it is
then. Urgent diagnoses (:func:`is_urgent`) are answered by the rules in the tick that found
them and never wait on a call.

What the checkpointed tick state remembers of a call is an ``Ask`` (plain JSON); the thread
and its outcome live only in this process, so a call in flight when the process dies is
lost, and the next process finds an ``Ask`` that no thread holds.

Example:
    >>> from autopilot.proposals import Proposal
    >>> calls = LLMCalls(lambda ctx: Proposal(proposer="ai", diagnosis="flat"))
    >>> calls.start("ask-s0-300", ctx=None)  # the policy context the call reads
    True
    >>> calls.wait(5.0) and calls.take("ask-s0-300").proposal.diagnosis
    'flat'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from autopilot.diagnoses import Diagnosis
from autopilot.proposals import Proposal
from autopilot.tokens import Usage

logger = logging.getLogger(__name__)

URGENT_KINDS = frozenset({"divergence"})
"""Diagnoses the rules answer at once whatever their severity (besides every ``high`` one)."""

CallStatus = Literal["answered", "failed", "stale", "lost"]


def is_urgent(diagnosis: Diagnosis) -> bool:
    """Whether ``diagnosis`` is answered by the rules at once, never waiting on the LLM."""
    return diagnosis.kind in URGENT_KINDS or diagnosis.severity == "high"


class Ask(TypedDict):
    """A call in flight, as the tick state remembers it (plain JSON)."""

    id: str
    step: int
    segment: int | None
    diagnoses: list[dict[str, Any]]
    """The diagnoses the call was asked about (``Diagnosis`` fields)."""


def ask_id(segment: int | None, step: int) -> str:
    """The id of the call asked at ``step`` of run segment ``segment`` (one per tick)."""
    return f"ask-s{segment or 0}-{step}"


class LLMCall(BaseModel):
    """What became of an LLM call made outside the tick, as its decision record says."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    asked_at_step: int
    kinds: list[str] = Field(default_factory=list, max_length=10)
    """The kinds of the diagnoses it was asked about."""
    status: CallStatus
    """``answered`` (judged by the guards), ``failed`` (the rules took over, or nothing was
    left to answer), ``stale`` (no diagnosis of its kinds was left: recorded, dropped),
    ``lost`` (the autopilot restarted while it was in flight)."""


def call_record(ask: Ask, status: CallStatus) -> dict[str, Any]:
    """The ``LLMCall`` of ``ask`` with ``status``, as JSON for the tick state."""
    kinds = [str(d.get("kind")) for d in ask["diagnoses"]]
    call = LLMCall(id=ask["id"], asked_at_step=ask["step"], kinds=kinds, status=status)
    return call.model_dump(mode="json")


@dataclass(frozen=True, kw_only=True)
class Settled:
    """A call's outcome: a proposal, or why there is none and what the attempt cost."""

    ask_id: str
    proposal: Proposal | None = None
    reason: str | None = None
    usage: Usage = Usage()
    provider_failed: bool = False


class LLMCalls:
    """One LLM call at a time, each in a daemon thread (a hung provider never blocks exit).

    Args:
        propose: asks the LLM policy for a proposal from a policy context; may raise
            ``LLMUnavailable`` (a reason and the spend so far) or anything else (a bug,
            recorded as a failure).
    """

    def __init__(self, propose: Callable[[Any], Proposal]) -> None:
        self._propose = propose
        self._lock = threading.Lock()
        self._held: str | None = None
        self._settled: Settled | None = None
        self._done = threading.Event()
        self._done.set()

    def start(self, call_id: str, ctx: Any) -> bool:
        """Start call ``call_id`` with policy context ``ctx``; ``False`` while another is in
        flight. Call it only when the tick state remembers no call: an outcome still here is
        then one that nobody will take (the tick that started it failed), and is dropped."""
        with self._lock:
            if self._held is not None and not self._done.is_set():
                return False
            if self._held is not None:
                logger.warning("dropping the outcome of LLM call %s: no tick took it", self._held)
            self._held, self._settled = call_id, None
            self._done.clear()
        thread = threading.Thread(
            target=self._run, args=(call_id, ctx), name=f"autopilot-llm[{call_id}]", daemon=True
        )
        thread.start()
        return True

    def holds(self, call_id: str) -> bool:
        """Whether call ``call_id`` is in flight or settled here (``False`` after a restart)."""
        with self._lock:
            return self._held == call_id

    def busy(self) -> bool:
        """Whether a call is held (in flight, or settled and not yet taken)."""
        with self._lock:
            return self._held is not None

    def pending(self) -> bool:
        """Whether a call is in flight."""
        return not self._done.is_set()

    def settled(self, call_id: str) -> bool:
        """Whether call ``call_id`` has an outcome waiting to be taken."""
        with self._lock:
            return self._settled is not None and self._settled.ask_id == call_id

    def take(self, call_id: str) -> Settled | None:
        """The outcome of call ``call_id`` if it has settled (and release it); else ``None``."""
        with self._lock:
            if self._settled is None or self._settled.ask_id != call_id:
                return None
            settled, self._settled, self._held = self._settled, None, None
            return settled

    def wait(self, timeout: float) -> bool:
        """Block until the call in flight has settled; whether it has (tests, shutdown)."""
        return self._done.wait(timeout)

    def _run(self, call_id: str, ctx: Any) -> None:
        settled = self._call(call_id, ctx)
        with self._lock:
            if self._held == call_id:
                self._settled = settled
        self._done.set()

    def _call(self, call_id: str, ctx: Any) -> Settled:
        from autopilot.llm.errors import LLMUnavailable  # with the client: only in the AI modes

        try:
            return Settled(ask_id=call_id, proposal=self._propose(ctx))
        except LLMUnavailable as exc:
            return Settled(
                ask_id=call_id,
                reason=exc.reason,
                usage=exc.usage,
                provider_failed=exc.provider_failed,
            )
        except Exception as exc:  # a bug must not kill the thread silently
            logger.exception("LLM call %s failed", call_id)
            return Settled(ask_id=call_id, reason=f"LLM call failed: {exc!r}"[:500])


__all__ = [
    "URGENT_KINDS",
    "Ask",
    "CallStatus",
    "LLMCall",
    "LLMCalls",
    "Settled",
    "ask_id",
    "call_record",
    "is_urgent",
]
