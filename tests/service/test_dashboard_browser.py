"""The dashboard in a real headless browser: Debian's ``chromium`` driven by Playwright,
against a real uvicorn server on loopback over run directories written by real ``Kernel``
training loops. Without chromium or Playwright these tests fail and say what to install."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from _service_runs import TOKEN, Training, last_step, poll

from autopilot.config import Settings
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.diagnoses import Diagnosis
from autopilot.guards import GuardContext, check
from autopilot.proposals import Action, Proposal
from autopilot.review import ReviewQueue
from autopilot.service import create_app
from kernel import LedgerRow, read_ledger

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("AUTOPILOT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("AUTOPILOT_DASHBOARD_SCREENSHOT")  # also copy the PNG there


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"no chromium at {CHROMIUM}: apt-get install chromium (or set $AUTOPILOT_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        # the system browser: `playwright install` downloads from a host we cannot reach
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn server on a free loopback port, until the test ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    poll(lambda: server.started or not thread.is_alive(), what="uvicorn to listen")
    assert thread.is_alive()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def server(root: Path) -> Iterator[str]:
    with serve(create_app(root, token=TOKEN)) as base:
        yield base


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1500})
    page = context.new_page()
    page.goto(f"{server}/dashboard/")
    page.fill("#token", TOKEN.value)
    page.click("#token-save")
    page.wait_for_selector("#token-state:has-text('token set')")
    yield page
    context.close()


def open_run(page: Page, run_id: str) -> None:
    page.evaluate("id => { location.hash = `#/run/${id}` }", run_id)
    page.wait_for_selector(".chart[data-metric='train/loss']")
    page.wait_for_function("document.body.dataset.stream === 'open'")


def ledger_row(run: Training, **fields: object) -> LedgerRow:
    def found() -> LedgerRow | None:
        rows = read_ledger(run.run_dir)
        return next((r for r in rows if all(getattr(r, k) == v for k, v in fields.items())), None)

    return poll(found, what=f"a ledger row with {fields}")


def queue_item(run: Training, item_id: str = "rv-1") -> None:
    """A pending proposal (lr x0.5), judged by the guards as the autopilot would."""
    queue = ReviewQueue(run.run_dir, Settings())
    proposal = Proposal(
        proposer="rules",
        diagnosis="val/loss plateaued",
        actions=[Action(knob="lr", multiplier=0.5, reason="escape the plateau")],
        confidence=0.9,
        reasoning="val/loss has not improved for 40 steps; a smaller lr settles it",
    )
    verdicts = check(proposal, GuardContext.from_run(run.run_dir), queue.settings)
    step = poll(lambda: last_step(run.run_dir), what="a step in kernel.json")
    queue.add(queue.new_item(step=step, proposal=proposal, verdicts=verdicts, item_id=item_id))


def test_the_overview_lists_a_live_run(page: Page, train) -> None:
    run: Training = train("exp1")
    poll(lambda: last_step(run.run_dir), what="a step")
    row = page.locator("#runs tr[data-run='exp1']")
    row.locator(".status:has-text('running')").wait_for()
    assert "val/loss" in row.inner_text()
    row.locator("a").click()
    page.wait_for_selector("#run-id:has-text('exp1')")


def test_the_chart_updates_live_and_marks_an_intervention(
    page: Page, server: str, train, tmp_path: Path
) -> None:
    run: Training = train("exp1", pace_s=0.02)
    poll(lambda: run.step >= 20, what="20 steps")
    DecisionLog(run.run_dir).append(plateau_decision(run.step))
    open_run(page, "exp1")
    chart = page.locator(".chart[data-metric='train/loss']")
    before = int(chart.get_attribute("data-points") or 0)
    page.wait_for_function(
        "n => +document.querySelector(\".chart[data-metric='train/loss']\").dataset.points > n",
        arg=before,
    )
    queue_item(run)
    body = {"op": "set", "assignments": ["lr=x0.5"], "reason": "from the test"}
    answer = httpx.post(
        f"{server}/api/v1/runs/exp1/commands",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN.value}"},
    )
    assert answer.status_code == 201, answer.text
    page.wait_for_selector("#markers li[data-kind='applied']")
    page.wait_for_selector("#markers li[data-kind='episode']")
    page.wait_for_selector(".item[data-item='rv-1']")
    page.wait_for_function(
        "+document.querySelector(\".chart[data-metric='train/loss']\").dataset.markers >= 1"
    )
    poll(lambda: run.step >= 80, what="80 steps")
    page.wait_for_timeout(500)  # the screenshot only: let the last points arrive
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT:
        shutil.copy(shot, SCREENSHOT)


def plateau_decision(step: int) -> DecisionRecord:
    """A decision as the autopilot records one: a plateau episode, a rules proposal."""
    diagnosis = Diagnosis(
        kind="plateau",
        metric="val/loss",
        step=step,
        message="val/loss has not improved for 10 steps",
        evidence={"best": 1.02, "patience": 10},
        episode="ep-1",
        onset_step=max(step - 10, 0),
    )
    proposal = Proposal(
        proposer="rules",
        diagnosis=diagnosis.message,
        actions=[Action(knob="lr", multiplier=0.5, reason="escape the plateau")],
    )
    return DecisionRecord(
        id="d-1",
        step=step,
        mode="suggest",
        diagnoses=[diagnosis],
        proposer="rules",
        proposal=proposal,
        route="review",
        proposal_id="rv-1",
    )


def test_approving_on_the_page_puts_a_human_row_in_the_ledger(page: Page, train) -> None:
    run: Training = train("exp1")
    queue_item(run)
    open_run(page, "exp1")
    item = page.locator(".item[data-item='rv-1']")
    assert "a smaller lr settles it" in item.inner_text()  # the reasoning, in view
    assert "no LLM call" in item.inner_text()  # the cost: the rules called no LLM
    item.locator(".edits").fill("lr=x0.8")  # the edited action is sent with source human
    item.locator(".approve").click()
    page.wait_for_selector("#message.ok:has-text('approved rv-1')")
    row = ledger_row(run, proposal_id="rv-1")
    assert (row.decision, row.source, row.knob) == ("applied", "human", "lr")
    assert run.lr == pytest.approx(0.04)
    page.wait_for_selector(f"#ledger tr[data-seq='{row.seq}'][data-source='human']")


def test_approving_unedited_on_the_page_is_the_persons_order_of_the_rules_idea(
    page: Page, train
) -> None:
    run: Training = train("exp1")
    queue_item(run)
    open_run(page, "exp1")
    page.locator(".item[data-item='rv-1'] .approve").click()
    page.wait_for_selector("#message.ok:has-text('approved rv-1')")
    row = ledger_row(run, proposal_id="rv-1")
    assert (row.decision, row.source, row.proposed_by) == ("applied", "human", "rules")
    assert run.lr == pytest.approx(0.025)  # x0.5, as proposed
    page.wait_for_selector(f"#ledger tr[data-seq='{row.seq}'][data-source='human']")


def test_a_command_from_the_panel_is_applied(page: Page, train) -> None:
    run: Training = train("exp1")
    poll(lambda: last_step(run.run_dir), what="a step")
    open_run(page, "exp1")
    knob = page.locator("#knobs tr[data-knob='lr']")
    assert knob.locator(".bounds").inner_text().startswith("[")  # its bounds, in view
    knob.locator(".knob-value").fill("0.02")
    knob.locator(".set").click()
    page.wait_for_selector("#message.ok:has-text('queued')")
    row = ledger_row(run, source="human", knob="lr")
    assert row.decision == "applied" and row.after == pytest.approx(0.02)
    assert run.lr == pytest.approx(0.02)
    page.wait_for_selector("#markers li[data-kind='applied']")


def test_a_rewind_from_the_panel_is_marked_on_the_chart(page: Page, train) -> None:
    run: Training = train("exp1")
    poll(lambda: run.step >= 1, what="a step (the kernel snapshots step 0)")
    open_run(page, "exp1")
    page.click("#rewind")
    page.wait_for_selector("#message.ok:has-text('queued rewind')")
    row = ledger_row(run, op="rewind")
    assert (row.decision, row.source) == ("applied", "human")
    page.wait_for_selector("#markers li[data-kind='rewind']")


def test_beyond_loopback_the_page_reads_with_the_token_and_streams_with_a_ticket(
    browser: Browser, root: Path, train
) -> None:
    run: Training = train("exp1", pace_s=0.02)
    poll(lambda: last_step(run.run_dir), what="a step")
    with serve(create_app(root, token=TOKEN, reads_need_token=True)) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/dashboard/#/run/exp1")
        page.wait_for_selector("#message.error:has-text('401')")  # no token: no reads
        page.fill("#token", TOKEN.value)
        page.click("#token-save")
        page.reload()
        open_run(page, "exp1")  # the stream opened: with a ticket, as EventSource sends none
        points = ".chart[data-metric='train/loss']"
        before = int(page.locator(points).get_attribute("data-points") or 0)
        page.wait_for_function(
            "([sel, n]) => +document.querySelector(sel).dataset.points > n", arg=[points, before]
        )
        context.close()


def test_a_write_without_the_token_is_refused_on_the_page(page: Page, train) -> None:
    run: Training = train("exp1")
    poll(lambda: last_step(run.run_dir), what="a step")
    open_run(page, "exp1")
    page.click("#token-clear")
    page.click("button[data-op='pause']")
    page.wait_for_selector("#message.error:has-text('401')")
    assert "Bearer" in page.inner_text("#message")
    assert not [r for r in read_ledger(run.run_dir) if r.op == "pause"]


def test_the_page_says_how_to_build_missing_assets(root: Path, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from autopilot.service import dashboard

    client = TestClient(create_app(root, token=TOKEN))
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert client.get("/dashboard/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/dashboard/..%2Fauth.py").status_code == 404
    monkeypatch.setitem(dashboard.VENDOR, "uPlot.iife.min.js", root / "absent.js")
    missing = client.get("/dashboard/")
    assert missing.status_code == 503 and "make install" in missing.text


def test_beyond_loopback_the_stream_takes_a_ticket_not_a_missing_token(root: Path, train) -> None:
    train("exp1")
    poll(lambda: last_step(root / "exp1"), what="a step")
    with serve(create_app(root, token=TOKEN, reads_need_token=True)) as base:
        url = f"{base}/api/v1/runs/exp1"
        with httpx.Client(timeout=10) as http:
            assert http.get(f"{url}/stream").status_code == 401
            assert http.get(f"{url}/stream", params={"ticket": "1.forged"}).status_code == 401
            assert http.post(f"{url}/stream-ticket").status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN.value}"}
            ticket = http.post(f"{url}/stream-ticket", headers=auth).json()["ticket"]
            with http.stream("GET", f"{url}/stream", params={"ticket": ticket}) as stream:
                assert stream.status_code == 200
            with http.stream(
                "GET", f"{base}/api/v1/runs/exp2/stream", params={"ticket": ticket}
            ) as s:
                assert s.status_code == 401  # a ticket opens its own run's stream only


def test_a_long_live_run_keeps_the_page_at_its_cap_and_its_markers(
    page: Page, server: str, train
) -> None:
    run: Training = train("exp1", pace_s=0.002)
    poll(lambda: run.step >= 5, what="5 steps")
    page.goto(f"{server}/dashboard/?max_points=20#/run/exp1")  # at most 2 x 20 kept
    open_run(page, "exp1")
    sel = ".chart[data-metric='train/loss']"
    page.evaluate(
        """sel => { const box = document.querySelector(sel); window.mostPoints = 0;
        new MutationObserver(() => { window.mostPoints = Math.max(window.mostPoints,
          +box.dataset.points) }).observe(box, { attributes: true }) }""",
        sel,
    )
    body = {"op": "set", "assignments": ["lr=x0.5"], "reason": "from the test"}
    auth = {"Authorization": f"Bearer {TOKEN.value}"}
    answer = httpx.post(f"{server}/api/v1/runs/exp1/commands", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    marked = int(page.locator("#markers li[data-kind='applied']").get_attribute("data-step") or 0)
    start = int(page.locator(sel).get_attribute("data-last-step") or 0)
    page.wait_for_function(
        "([sel, n]) => +document.querySelector(sel).dataset.lastStep > n", arg=[sel, start + 200]
    )
    chart = page.locator(sel)
    assert 0 < page.evaluate("window.mostPoints") <= 40  # 200 points streamed, 40 at most kept
    first = int(chart.get_attribute("data-first-step") or -1)
    assert first <= marked <= int(chart.get_attribute("data-last-step") or 0)
    assert int(chart.get_attribute("data-markers") or 0) >= 1
