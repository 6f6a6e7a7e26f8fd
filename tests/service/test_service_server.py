"""A real uvicorn server on a free loopback port (``make_server``, as ``autopilot serve``
builds it): the API over HTTP, and the live stream delivering a new ledger row."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _service_runs import Training, poll

from autopilot.service import make_server
from autopilot.service.auth import ENV_TOKEN

TOKEN = "server-token-0123456789abcdef"


@pytest.fixture
def server(root: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prepared = make_server(root, port=port, env={ENV_TOKEN: TOKEN})
    thread = threading.Thread(target=prepared.server.run, daemon=True)
    thread.start()
    poll(lambda: prepared.server.started or not thread.is_alive(), what="uvicorn to listen")
    assert thread.is_alive()
    yield f"http://127.0.0.1:{port}/api/v1"
    prepared.server.should_exit = True
    thread.join(10)


def test_the_stream_delivers_a_new_ledger_row(server: str, train) -> None:
    run: Training = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    events: list[tuple[str, dict]] = []
    with (
        httpx.Client(timeout=30) as http,
        http.stream("GET", f"{server}/runs/exp1/stream") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = {"op": "set", "assignments": ["lr=x0.5"]}
        answer = http.post(f"{server}/runs/exp1/commands", json=body, headers=auth)
        assert answer.status_code == 201, answer.text
        command_id = answer.json()["commands"][0]["id"]
        name = None
        deadline = time.monotonic() + 30  # a safety net: the row comes at the next step
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:") and name is not None:
                events.append((name, json.loads(line.removeprefix("data:"))))
                if name == "ledger" or time.monotonic() > deadline:
                    break
    ledger = [data for name, data in events if name == "ledger"]
    assert ledger and ledger[0]["command_id"] == command_id
    assert ledger[0]["source"] == "human" and ledger[0]["decision"] == "applied"
    assert any(name == "metrics" for name, _ in events)


def test_the_real_server_refuses_a_write_without_the_token(server: str, train) -> None:
    train("exp1")
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{server}/runs").status_code == 200  # reads are open on loopback
        answer = http.put(f"{server}/runs/exp1/mode", json={"mode": "auto"})
        assert answer.status_code == 401 and "Bearer" in answer.json()["detail"]
        schema = http.get(server.removesuffix("/api/v1") + "/openapi.json").json()
        assert "/api/v1/runs/{run_id}/review/{item_id}/approve" in schema["paths"]


def test_the_stream_delivers_a_new_review_item(server: str, train) -> None:
    from autopilot.config import Settings
    from autopilot.proposals import Action, Proposal
    from autopilot.review import ReviewQueue

    run: Training = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    queue = ReviewQueue(run.run_dir, Settings())
    proposal = Proposal(
        proposer="rules",
        diagnosis="val/loss plateaued",
        actions=[Action(knob="lr", multiplier=0.5, reason="plateau")],
        confidence=0.9,
    )
    event: dict = {}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("GET", f"{server}/runs/exp1/stream") as stream,
    ):
        added = False
        name = None
        deadline = time.monotonic() + 30  # metrics keep coming: never read the stream forever
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:") and not added:
                # the stream is live (it follows from "now"): the item comes after it
                item = queue.new_item(step=run.step, proposal=proposal, verdicts=[], item_id="rv-7")
                queue.add(item)
                added = True
            elif line.startswith("data:") and name == "review":
                event = json.loads(line.removeprefix("data:"))
                break
            if time.monotonic() > deadline:
                break
    assert (event.get("event"), event.get("id")) == ("proposed", "rv-7")


def test_serve_refuses_to_start_with_a_clear_line(root: Path, capsys, monkeypatch) -> None:
    from autopilot.cli import main

    monkeypatch.delenv(ENV_TOKEN, raising=False)
    assert main(["serve", "--runs", str(root / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["serve", "--runs", str(root), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no token: a server on an address other than loopback")
