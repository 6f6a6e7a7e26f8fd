"""Notifications: Slack-compatible JSON posted to ``[notify] webhook_url`` when a proposal
waits for review, a reflex or rewind fires, the LLM falls back several times in a row, the
budget is exhausted, or a run ends.

The webhook comes from the user's own config only (a run directory's ``autopilot.toml`` may
not set it: ``autopilot._config_trust``). Posts go out from one daemon thread with a short
timeout, so a tick never waits on the receiver; a failed post is logged, never raised.
Each kind is sent at most once per ``min_interval_s``, and a run sends at most
``max_per_run`` in all.

Example:
    >>> from autopilot.config import NotifySettings
    >>> n = Notifier(NotifySettings(), "RUN")  # no webhook: every event is dropped
    >>> n.send(Event(kind="run_end", run="RUN", step=10, text="training ended"))
    False
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import AI_MODES, NotifySettings, Settings
from autopilot.decisions import DecisionRecord
from autopilot.proposals import Action

logger = logging.getLogger(__name__)

EventKind = Literal["review", "rewind", "fallbacks", "budget", "run_end"]


class Event(BaseModel):
    """One notification: what happened to which run, at which step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EventKind
    run: str = Field(max_length=1000)
    step: int | None = None
    text: str = Field(max_length=2000)

    def body(self) -> dict[str, Any]:
        """The Slack-compatible JSON body: ``text`` (any webhook shows it) and one block."""
        at = f" at step {self.step}" if self.step is not None else ""
        line = f"[autopilot] {self.run}{at}: {self.text}"
        block = {"type": "section", "text": {"type": "mrkdwn", "text": line}}
        return {"text": line, "blocks": [block]}


class Notifier:
    """Posts ``Event`` bodies to the configured webhook, rate-limited, off the tick's thread.

    Args:
        settings: the ``[notify]`` section (no ``webhook_url``: nothing is sent).
        run_dir: the run the events are about (named in each message).
    """

    def __init__(self, settings: NotifySettings, run_dir: str | Path) -> None:
        self.settings = settings
        self.run = str(run_dir)
        self._last: dict[str, float] = {}
        self._sent = 0
        self._fallbacks = 0
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook_url)

    def send(self, event: Event) -> bool:
        """Queue ``event`` unless the rate limit holds it back; whether it was queued."""
        if not self.enabled:
            return False
        now = time.monotonic()
        with self._lock:
            last = self._last.get(event.kind)
            if last is not None and now - last < self.settings.min_interval_s:
                logger.debug("notification %s held back by the rate limit", event.kind)
                return False
            if self._sent >= self.settings.max_per_run:
                return False
            self._last[event.kind] = now
            self._sent += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._post_all, daemon=True)
                self._thread.start()
        self._queue.put(event)
        return True

    def event(self, kind: EventKind, text: str, step: int | None = None) -> bool:
        """``send`` an event of ``kind`` about this run."""
        return self.send(Event(kind=kind, run=self.run, step=step, text=text[:2000]))

    def decided(self, *, fell_back: bool, step: int) -> bool:
        """Count a decision; notify when ``fallbacks_in_a_row`` in a row fell back."""
        self._fallbacks = self._fallbacks + 1 if fell_back else 0
        if self._fallbacks < self.settings.fallbacks_in_a_row:
            return False
        count = self._fallbacks
        self._fallbacks = 0
        return self.event(
            "fallbacks", f"the LLM fell back to the rules {count} times in a row", step
        )

    def close(self, timeout: float = 5.0) -> None:
        """Let the queued posts go out (at most ``timeout`` seconds), then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)

    def _post_all(self) -> None:
        import httpx  # only when a webhook is configured

        with httpx.Client(timeout=self.settings.timeout_s) as client:
            while (event := self._queue.get()) is not None:
                self._post(client, event)

    def _post(self, client: Any, event: Event) -> None:
        url = self.settings.webhook_url
        assert url is not None
        try:
            response = client.post(url, json=event.body())
            response.raise_for_status()
        except Exception as exc:  # a dead receiver must never reach the tick
            logger.warning("notification %s to the webhook failed: %s", event.kind, exc)


def notify_decision(notifier: Notifier, record: DecisionRecord, settings: Settings) -> None:
    """What a recorded decision is worth telling: a proposal waiting for review, the
    ``fallbacks_in_a_row``-th fallback in a row of an AI mode, an exhausted budget."""
    if not notifier.enabled:
        return
    kinds = ", ".join(d.kind for d in record.diagnoses) or "no diagnosis"
    if record.route == "review" and record.proposal is not None:
        actions = "; ".join(_action(a) for a in record.proposal.actions) or "no change"
        notifier.event(
            "review",
            f"proposal {record.id} waits for review ({kinds}): {actions}. "
            f"`autopilot review show {record.id}`",
            record.step,
        )
    if record.mode not in AI_MODES:
        return
    # an urgent diagnosis answered by the rules at once is no failure of the LLM
    fell_back = record.fallback_reason is not None and not record.urgent
    notifier.decided(fell_back=fell_back, step=record.step)
    if fell_back and _budget_left(notifier.run, settings) <= 0:
        notifier.event(
            "budget", f"the LLM budget is exhausted: {record.fallback_reason}", record.step
        )


def notify_rewinds(notifier: Notifier, rows: list[dict[str, Any]]) -> None:
    """A notification for each applied rewind among ``rows`` (ledger rows as JSON): the
    kernel's reflex, or a rewind command."""
    if not notifier.enabled:
        return
    for row in rows:
        if row.get("op") != "rewind":
            continue
        reflex = row.get("reflex")
        who = f"the kernel's reflex ({reflex.get('metric')})" if reflex else row.get("source")
        notifier.event(
            "rewind",
            f"{who} rewound the run to step {row.get('snapshot_step')}: {row.get('reason') or ''}",
            row.get("step"),
        )


def _action(action: Action) -> str:
    if action.op == "rewind":
        return f"rewind to {action.to or action.to_step}"
    if action.value is not None:
        return f"{action.knob} = {action.value}"
    return f"{action.knob} x{action.multiplier}"


def _budget_left(run_dir: str, settings: Settings) -> float:
    from autopilot.budget import Budget

    try:
        return Budget(run_dir, settings).remaining()
    except Exception:  # a ledger that cannot be read says nothing about the budget
        return 1.0


__all__ = ["Event", "EventKind", "Notifier", "notify_decision", "notify_rewinds"]
