"""Notifications reach a real webhook receiver on loopback: a proposal waiting for review,
the kernel's reflex rewind and the run's end from a real diverging run; the rate limit
holds; a dead receiver never breaks a tick."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from llm_server import ServerThread
from spiked_loop import SPIKE_STEP, SpikedLoop

from autopilot.config import NotifySettings, Settings, load_config
from autopilot.decisions import DecisionRecord
from autopilot.notify import Event, Notifier, notify_decision
from autopilot.watch import Autopilot

LOCKSTEP: dict[str, Any] = {"flush_interval_s": 0.0, "heartbeat_interval_s": 3600.0}


class Receiver:
    """A Slack-style incoming webhook: keeps every JSON body posted to ``/hook``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> dict[str, str]:
            self.bodies.append(await request.json())
            return {"ok": "true"}

        self.server = ServerThread(app)
        self.url = f"http://127.0.0.1:{self.server.port}/hook"

    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with r.server:
        yield r


def _settings(tmp_path: Path, url: str, **notify: Any) -> Settings:
    return Settings.model_validate(
        {
            "budget": {"day_ledger": str(tmp_path / "day.jsonl")},
            "notify": {"webhook_url": url, "min_interval_s": 0, **notify},
        }
    )


def _train_watched(run_dir: Path, settings: Settings, mode: str, steps: int = 220) -> None:
    loop = SpikedLoop(run_dir, **LOCKSTEP)
    with Autopilot(run_dir, mode=mode, settings=settings) as pilot:

        def tick(step: int) -> None:
            if step % 10 == 0:
                pilot.tick()

        loop.train(steps, on_step=tick)


def test_a_diverging_run_notifies_its_review_item_its_reflex_and_its_end(
    tmp_path: Path, receiver: Receiver
) -> None:
    run_dir = tmp_path / "run"
    _train_watched(run_dir, _settings(tmp_path, receiver.url), "suggest")
    texts = receiver.texts()
    (rewind,) = [t for t in texts if "reflex" in t]
    assert f"at step {SPIKE_STEP + 1}" in rewind and "rewound the run to step" in rewind
    reviews = [t for t in texts if "waits for review" in t]
    assert reviews and "divergence" in reviews[0] and "lr" in reviews[0]
    assert texts[-1].endswith("training ended (closed)") and str(run_dir) in texts[-1]
    assert all(b["blocks"][0]["text"]["text"] == b["text"] for b in receiver.bodies)


def test_the_rate_limit_sends_one_of_a_kind_per_interval(
    tmp_path: Path, receiver: Receiver
) -> None:
    notifier = Notifier(NotifySettings(webhook_url=receiver.url, min_interval_s=3600), "RUN")
    assert notifier.event("review", "first", 10)
    assert not notifier.event("review", "second", 20)  # within the interval
    assert notifier.event("run_end", "ended", 30)  # another kind has its own interval
    notifier.close()
    assert receiver.texts() == [
        "[autopilot] RUN at step 10: first",
        "[autopilot] RUN at step 30: ended",
    ]


def test_the_run_cap_and_the_fallbacks_in_a_row(receiver: Receiver) -> None:
    settings = NotifySettings(webhook_url=receiver.url, min_interval_s=0, max_per_run=2)
    notifier = Notifier(settings, "RUN")
    assert not notifier.decided(fell_back=True, step=1)
    assert not notifier.decided(fell_back=True, step=2)
    assert not notifier.decided(fell_back=False, step=3)  # the count starts again
    assert [notifier.decided(fell_back=True, step=s) for s in (4, 5, 6)] == [False, False, True]
    assert notifier.send(Event(kind="budget", run="RUN", text="out"))
    assert not notifier.send(Event(kind="budget", run="RUN", text="again"))  # the run's cap
    notifier.close()
    assert (
        receiver.texts()[0]
        == "[autopilot] RUN at step 6: the LLM fell back to the rules 3 times in a row"
    )
    assert len(receiver.bodies) == 2


def test_a_dead_receiver_never_breaks_the_tick(tmp_path: Path, caplog) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    settings = _settings(tmp_path, f"http://127.0.0.1:{port}/hook", timeout_s=0.5)
    with caplog.at_level(logging.WARNING, logger="autopilot.notify"):
        _train_watched(run_dir, settings, "suggest", steps=SPIKE_STEP + 40)
    assert "to the webhook failed" in caplog.text
    assert (run_dir / "autopilot" / "decisions.jsonl").exists()


def test_a_run_directory_cannot_set_the_webhook(tmp_path: Path) -> None:
    (tmp_path / "autopilot.toml").write_text('[notify]\nwebhook_url = "http://evil/"\n')
    loaded = load_config(None, tmp_path)
    assert loaded.settings.notify.webhook_url is None
    assert "notify.webhook_url" in loaded.ignored


def _fallback(step: int, **kw: Any) -> DecisionRecord:
    return DecisionRecord(
        id=f"d{step}", step=step, mode="ai_auto", fallback_reason="budget: per-run cap", **kw
    )


def test_fallbacks_in_a_row_and_an_exhausted_budget_are_told_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.url, fallbacks_in_a_row=2)
    spent = settings.model_copy(
        update={"budget": settings.budget.model_copy(update={"per_run_usd": 0})}
    )
    notifier = Notifier(spent.notify, tmp_path)
    notify_decision(notifier, _fallback(10, urgent=True), spent)  # the rules at once: no failure
    for step in (20, 30):
        notify_decision(notifier, _fallback(step), spent)
    notifier.close()
    texts = receiver.texts()
    assert [t for t in texts if "fell back" in t] == [
        f"[autopilot] {tmp_path} at step 30: the LLM fell back to the rules 2 times in a row"
    ]
    budget = [t for t in texts if "budget is exhausted" in t]
    assert len(budget) == 2 and "at step 20" in budget[0]  # min_interval_s = 0 here


def test_a_fallback_with_budget_left_is_no_budget_notification(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.url)
    notifier = Notifier(settings.notify, tmp_path)
    notify_decision(notifier, _fallback(10), settings)
    notifier.close()
    assert receiver.bodies == []
