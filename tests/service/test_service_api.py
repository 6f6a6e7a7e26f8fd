"""The HTTP API over real run directories: reads, commands applied by a real kernel,
review decisions, modes, freeze, and the refusals (no token, paths outside the root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _service_runs import AUTH, TOKEN, Training, last_step, poll
from fastapi.testclient import TestClient

from autopilot.config import Settings
from autopilot.guards import GuardContext, check
from autopilot.proposals import Action, Proposal
from autopilot.review import ReviewQueue
from kernel import LedgerRow, MetricRecord, read_ledger

API = "/api/v1"


def queue_item(run_dir: Path, item_id: str = "rv-1") -> None:
    """A pending proposal (lr x0.5), judged by the guards as the autopilot would."""
    queue = ReviewQueue(run_dir, Settings())
    proposal = Proposal(
        proposer="rules",
        diagnosis="val/loss plateaued",
        actions=[Action(knob="lr", multiplier=0.5, reason="escape the plateau")],
        confidence=0.9,
    )
    verdicts = check(proposal, GuardContext.from_run(run_dir), queue.settings)
    step = poll(lambda: last_step(run_dir), what="a step in kernel.json")
    queue.add(queue.new_item(step=step, proposal=proposal, verdicts=verdicts, item_id=item_id))


def ledger_row(run_dir: Path, command_id: str) -> LedgerRow:
    return poll(
        lambda: next((r for r in read_ledger(run_dir) if r.command_id == command_id), None),
        what=f"the ledger row of {command_id}",
    )


def test_the_runs_list_shows_a_real_training_run(client: TestClient, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 20, what="20 steps")
    (summary,) = client.get(f"{API}/runs").json()
    assert summary["id"] == "exp1" and summary["status"] == "running"
    assert summary["key_metric"] == "val/loss" and summary["key_value"] is not None
    assert summary["mode"] is None and summary["pilot"]["state"] == "idle"
    detail = client.get(f"{API}/runs/exp1").json()
    assert {k["name"] for k in detail["kernel"]["knobs"]} >= {"lr", "weight_decay"}


def test_metrics_arrive_incrementally_from_an_offset(client: TestClient, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 10, what="10 steps")
    first = client.get(f"{API}/runs/exp1/metrics", params={"names": "train/loss"}).json()
    assert list(first["series"]) == ["train/loss"]
    seen = first["series"]["train/loss"]["steps"]
    poll(lambda: run.step >= seen[-1] + 10, what="10 more steps")
    params = {"offset": first["next_offset"], "names": "train/loss"}
    more = client.get(f"{API}/runs/exp1/metrics", params=params).json()
    steps = more["series"]["train/loss"]["steps"]
    assert steps[0] == seen[-1] + 1  # nothing twice, nothing skipped


def test_a_command_through_the_api_is_applied_by_the_kernel(client: TestClient, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    body = {"op": "set", "assignments": ["lr=x0.5"], "reason": "from the API"}
    answer = client.post(f"{API}/runs/exp1/commands", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text
    (command,) = answer.json()["commands"]
    assert command["source"] == "human" and answer.json()["when"] == ["applied at the next step"]
    row = ledger_row(run.run_dir, command["id"])
    assert (row.decision, row.source, row.after) == ("applied", "human", pytest.approx(0.025))
    assert run.lr == pytest.approx(0.025)
    rows = client.get(f"{API}/runs/exp1/ledger").json()
    assert [r["command_id"] for r in rows] == [command["id"]]


def test_a_command_is_checked_like_the_cli_checks_it(client: TestClient, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    bad = {"op": "set", "assignments": ["lr=100"]}
    answer = client.post(f"{API}/runs/exp1/commands", json=bad, headers=AUTH)
    assert answer.status_code == 409
    assert answer.json()["detail"] == "lr must be within [1e-07, 10.0], got 100"
    unknown = {"op": "set", "assignments": ["lrr=1"]}
    answer = client.post(f"{API}/runs/exp1/commands", json=unknown, headers=AUTH)
    assert "unknown knob 'lrr'" in answer.json()["detail"]
    assert not (run.run_dir / "commands.jsonl").exists()


def test_an_ended_run_takes_no_command(client: TestClient, train) -> None:
    run = train("exp1", steps=5)
    run.join()
    answer = client.post(f"{API}/runs/exp1/commands", json={"op": "pause"}, headers=AUTH)
    assert answer.status_code == 409
    assert "has ended (closed, segment 0); there is nothing to pause" in answer.json()["detail"]


def test_approve_with_an_edit_puts_a_human_row_in_the_ledger(client: TestClient, train) -> None:
    run = train("exp1")
    queue_item(run.run_dir)
    assert [i["id"] for i in client.get(f"{API}/runs/exp1/review?status=pending").json()] == [
        "rv-1"
    ]
    body = {"edits": ["lr=x0.8"]}
    answer = client.post(f"{API}/runs/exp1/review/rv-1/approve", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    (command,) = answer.json()["commands"]
    assert command["source"] == "human" and command["proposal_id"] == "rv-1"
    assert command["proposed_by"] is None  # what a person edited is their own idea
    row = ledger_row(run.run_dir, command["id"])
    assert (row.decision, row.source, row.proposal_id) == ("applied", "human", "rv-1")
    assert run.lr == pytest.approx(0.04)
    again = client.post(f"{API}/runs/exp1/review/rv-1/approve", json={}, headers=AUTH)
    assert again.status_code == 409 and "rv-1" in again.json()["detail"]


def test_approve_unedited_puts_a_human_row_of_the_proposers_idea(client: TestClient, train) -> None:
    run = train("exp1")
    queue_item(run.run_dir)
    answer = client.post(f"{API}/runs/exp1/review/rv-1/approve", json={}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    (command,) = answer.json()["commands"]
    assert (command["source"], command["proposed_by"]) == ("human", "rules")
    row = ledger_row(run.run_dir, command["id"])
    assert (row.decision, row.source, row.proposed_by) == ("applied", "human", "rules")
    served = client.get(f"{API}/runs/exp1/ledger").json()
    assert [(r["source"], r["proposed_by"]) for r in served if r["seq"] == row.seq] == [
        ("human", "rules")
    ]


def test_reject_keeps_the_reason(client: TestClient, train) -> None:
    run = train("exp1")
    queue_item(run.run_dir)
    body = {"why": "the eval set is noisy"}
    answer = client.post(f"{API}/runs/exp1/review/rv/reject", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["why"]) == ("rejected", body["why"])
    assert client.get(f"{API}/runs/exp1/review/rv-1").json()["status"] == "rejected"
    missing = client.post(f"{API}/runs/exp1/review/rv-9/reject", json={}, headers=AUTH)
    assert missing.status_code == 404 and "no proposal 'rv-9'" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/runs/exp1/commands", {"op": "stop"}),
        ("put", "/runs/exp1/mode", {"mode": "auto"}),
        ("put", "/runs/exp1/freeze", {"mode": "prod"}),
        ("post", "/runs/exp1/rewind", {}),
        ("post", "/runs/exp1/review/rv-1/reject", {}),
    ],
)
def test_a_write_without_the_token_is_refused(
    client: TestClient, train, method: str, path: str, body: dict
) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 1, what="a step")
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        answer = getattr(client, method)(API + path, json=body, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "needs the service's token" in answer.json()["detail"]
        assert "Authorization: Bearer TOKEN" in answer.json()["detail"]
    assert not (run.run_dir / "commands.jsonl").exists()
    assert not (run.run_dir / "freeze.json").exists()


def test_reads_need_the_token_beyond_loopback(root: Path, train) -> None:
    from autopilot.service import create_app

    train("exp1")
    app = create_app(root, token=TOKEN, reads_need_token=True)
    with TestClient(app) as c:
        assert c.get(f"{API}/runs").status_code == 401
        assert c.get(f"{API}/runs", headers=AUTH).status_code == 200
        assert c.get(f"{API}/health").status_code == 200


@pytest.mark.parametrize(
    "run_id",
    ["..", "..%2F..%2Fetc", "%2Fetc", "exp1%2F..%2F..", "....", "~", "exp1~..", "%00"],
)
def test_no_run_id_reaches_outside_the_root(client: TestClient, train, run_id: str) -> None:
    train("exp1")
    answer = client.get(f"{API}/runs/{run_id}/ledger")
    assert answer.status_code in (404, 422), answer.text
    assert "detail" in answer.json()


def test_a_link_out_of_the_root_is_no_run(client: TestClient, root: Path, train, tmp_path) -> None:
    outside = train("exp1").run_dir.parent.parent / "outside"
    Training(outside, steps=3).join()
    (root / "linked").symlink_to(outside)
    assert [r["id"] for r in client.get(f"{API}/runs").json()] == ["exp1"]
    assert client.get(f"{API}/runs/linked").status_code == 404


@pytest.mark.parametrize("recipe", ["../../outside.jsonl", "/etc/passwd", "x\x00y"])
def test_a_recipe_outside_the_root_is_refused(client: TestClient, train, recipe: str) -> None:
    train("exp1")
    body = {"mode": "replay", "recipe": recipe}
    answer = client.put(f"{API}/runs/exp1/freeze", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert "outside the service's root" in answer.json()["detail"]


def test_freeze_through_the_api_reaches_the_kernel(client: TestClient, train) -> None:
    run = train("exp1")
    answer = client.put(f"{API}/runs/exp1/freeze", json={"mode": "prod"}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["mode"] == "prod"
    assert json.loads((run.run_dir / "freeze.json").read_text())["mode"] == "prod"
    assert client.get(f"{API}/runs/exp1/freeze").json()["mode"] == "prod"


def test_rewind_through_the_api(client: TestClient, train) -> None:
    run = train("exp1")
    poll(lambda: run.step >= 3, what="a snapshot")
    answer = client.post(f"{API}/runs/exp1/rewind", json={"to": {"back": 1}}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    (command,) = answer.json()["commands"]
    assert command["op"] == "rewind" and command["source"] == "human"
    assert ledger_row(run.run_dir, command["id"]).decision == "applied"


def test_budget_decisions_and_lessons_read_the_core(client: TestClient, train) -> None:
    train("exp1")
    budget = client.get(f"{API}/runs/exp1/budget").json()
    assert budget["spent_run_usd"] == 0 and budget["per_run_usd"] > 0
    assert client.get(f"{API}/runs/exp1/decisions").json() == []
    lessons = client.get(f"{API}/runs/exp1/lessons").json()
    assert lessons["lessons"] == [] and lessons["memory"]


def test_a_long_series_arrives_downsampled_with_its_extremes(client: TestClient, train) -> None:
    run = train("exp1", steps=3)
    run.join()
    values = [1.0 / (1 + s / 1000) for s in range(100_000)]
    values[40_000], values[90_000] = 9.0, float("nan")
    lines = (
        MetricRecord(step=s, metrics={"train/loss": v}).to_line() for s, v in enumerate(values)
    )
    (run.run_dir / "metrics.jsonl").write_text("".join(lines))
    page = client.get(f"{API}/runs/exp1/metrics").json()
    series = page["series"]["train/loss"]
    assert page["downsampled"] and series["points"] == 100_000
    assert 1900 <= len(series["steps"]) <= 2100
    assert series["steps"][0] == 0 and series["steps"][-1] == 99_999
    assert 40_000 in series["steps"] and max(v for v in series["values"] if v) == 9.0
    assert series["values"][series["steps"].index(90_000)] is None  # NaN kept, as null
    small = client.get(f"{API}/runs/exp1/metrics", params={"max_points": 100}).json()
    assert len(small["series"]["train/loss"]["steps"]) == 101  # 100 and the NaN


def test_a_garbled_kernel_json_does_not_hide_the_other_runs(
    client: TestClient, root: Path, train
) -> None:
    train("exp1")
    (root / "broken").mkdir()
    (root / "broken" / "kernel.json").write_text("{not json")
    runs = {r["id"]: r["status"] for r in client.get(f"{API}/runs").json()}
    assert runs["exp1"] == "running" and runs["broken"].startswith("unreadable: ")
    answer = client.post(f"{API}/runs/broken/commands", json={"op": "stop"}, headers=AUTH)
    assert answer.status_code == 409 and "is not valid JSON" in answer.json()["detail"]
