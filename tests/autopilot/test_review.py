"""The review queue: events folded into state, approvals through the guards, one winner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _runs import mul, proposal, record_change, val, write_run

from autopilot.config import Settings
from autopilot.errors import ReviewError
from autopilot.guards import GuardContext, check
from autopilot.review import ReviewItem, ReviewQueue
from autopilot.tokens import Usage
from kernel import read_kernel_state, write_freeze
from kernel.state import write_kernel_state

SETTINGS = Settings.model_validate({"review": {"expire_after_steps": 500}})


def queued(run_dir: Path) -> list[dict]:
    path = run_dir / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def add(queue: ReviewQueue, *actions, step: int = 1000, item_id: str | None = None) -> ReviewItem:
    p = proposal(*(actions or (mul("lr", 0.5),)))
    verdicts = check(p, GuardContext.from_run(queue.run_dir), queue.settings)
    return queue.add(queue.new_item(step=step, proposal=p, verdicts=verdicts, item_id=item_id))


@pytest.fixture
def queue(tmp_path: Path) -> ReviewQueue:
    write_run(tmp_path, step=1000)
    return ReviewQueue(tmp_path, SETTINGS)


def test_add_list_and_get_by_prefix(queue: ReviewQueue) -> None:
    item = add(queue)
    assert item.status == "pending" and item.expires_after_step == 1500
    assert item.verdicts[0].value == 0.05
    assert [i.id for i in queue.items()] == [item.id]
    assert queue.get(item.id[:5]).id == item.id
    assert add(queue, item_id=item.id).created_at == item.created_at  # adding again: a no-op
    assert len(queue.items()) == 1


def test_unknown_and_ambiguous_ids(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-aa1")
    add(queue, mul("weight_decay", 2.0), item_id="rv-aa2")
    with pytest.raises(ReviewError, match="no proposal 'zz' in the review queue"):
        queue.get("zz")
    with pytest.raises(ReviewError, match="'rv-aa' matches 2 proposals"):
        queue.get("rv-aa")


def test_approve_queues_a_persons_commands_of_the_proposers_idea(queue: ReviewQueue) -> None:
    item = add(queue, mul("lr", 0.5), mul("weight_decay", 2.0), item_id="rv-1")
    approval = queue.approve("rv-1")
    assert [c.id for c in approval.commands] == ["ai-rv-1-0", "ai-rv-1-1"]  # the proposer's ids
    sent = queued(queue.run_dir)
    fields = ("knob", "multiplier", "source", "proposed_by", "proposal_id")
    assert [tuple(c[f] for f in fields) for c in sent] == [
        ("lr", 0.5, "human", "ai", "rv-1"),
        ("weight_decay", 2.0, "human", "ai", "rv-1"),
    ]
    now = queue.get(item.id)
    assert now.status == "approved" and now.command_ids == ["ai-rv-1-0", "ai-rv-1-1"]
    assert now.decided_step == 1000 and len(now.approval_verdicts) == 2


def test_an_approved_item_becomes_applied_with_the_ledger(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    queue.approve("rv-1")
    assert queue.note_applied() == []
    record_change(queue.run_dir, step=1001, knob="lr", source="ai", command_id="ai-rv-1-0")
    assert queue.get("rv-1").status == "applied"  # computed from the ledger
    assert [i.applied_step for i in queue.note_applied()] == [1000]
    assert queue.note_applied() == []  # recorded once


def test_an_edited_approval_is_still_clamped_by_the_guards(queue: ReviewQueue) -> None:
    add(queue, mul("lr", 0.5), item_id="rv-1")
    approval = queue.approve("rv-1", edits=[mul("lr", 10.0), val("grad_clip", 1.0)])
    lr, clip = approval.verdicts
    assert (lr.status, lr.value, lr.requested.multiplier) == ("clamped", 0.2, 10.0)
    assert (clip.status, clip.value) == ("allowed", 1.0)
    assert [c.get("multiplier", c.get("value")) for c in queued(queue.run_dir)] == [2.0, 1.0]
    assert [e.describe() for e in queue.get("rv-1").edits] == ["lr x10", "grad_clip=1"]


def test_approval_rechecks_the_run_as_it_is_now(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    record_change(queue.run_dir, step=990, knob="lr", source="human")
    with pytest.raises(ReviewError, match="the guards reject every action now") as exc:
        queue.approve("rv-1")
    assert "lr was changed at step 990" in str(exc.value) and "stays pending" in str(exc.value)
    assert queue.get("rv-1").status == "pending" and queued(queue.run_dir) == []
    write_freeze(queue.run_dir, "prod")
    with pytest.raises(ReviewError, match=r"the run is frozen \(freeze prod\)"):
        queue.approve("rv-1", current_step=1100)


def test_reject_keeps_why_and_a_decided_item_cannot_be_decided_again(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    item = queue.reject("rv-1", "the plateau is the warmup")
    assert (item.status, item.why) == ("rejected", "the plateau is the warmup")
    assert queue.get("rv-1").why == "the plateau is the warmup"
    with pytest.raises(ReviewError, match="proposal rv-1 was already rejected at step 1000"):
        queue.approve("rv-1")
    assert queued(queue.run_dir) == []


def test_expiry_is_computed_then_recorded(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1", step=700)  # expires after step 1200
    add(queue, mul("weight_decay", 2.0), item_id="rv-2", step=1000)
    assert [i.status for i in queue.items(current_step=1750)] == ["expired", "expired"]
    assert [i.status for i in queue.items(current_step=1300)] == ["expired", "pending"]
    assert [i.id for i in queue.expire_due(1300)] == ["rv-1"]
    assert queue.expire_due(1300) == []
    assert queue.get("rv-1", current_step=1000).status == "expired"  # recorded now


def test_approving_an_expired_item_is_refused(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1", step=700)
    with pytest.raises(ReviewError) as exc:
        queue.approve("rv-1", current_step=1750)
    assert str(exc.value) == (
        "proposal rv-1 expired at step 1200 (the run is at step 1750); the autopilot will "
        "propose again if the problem persists"
    )
    assert queue.get("rv-1", current_step=0).status == "expired"


def test_torn_lines_in_the_queue_are_skipped(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    with queue.path.open("a") as f:
        f.write('{"event": "approved", "id": "rv-1", "comm')
    assert queue.get("rv-1").status == "pending"
    add(queue, mul("weight_decay", 2.0), item_id="rv-2")
    assert [i.id for i in queue.items()] == ["rv-1", "rv-2"]


def tear(queue: ReviewQueue, event: str) -> None:
    """Cut the ``event`` line of the queue file in half, as a writer killed mid-line does."""
    lines = queue.path.read_text().split("\n")
    at = next(n for n, line in enumerate(lines) if json.loads(line or "{}").get("event") == event)
    lines[at] = lines[at][: len(lines[at]) // 2]
    queue.path.write_text("\n".join(lines))


def test_a_torn_approval_never_turns_an_applied_item_back_to_pending(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    queue.approve("rv-1")
    record_change(queue.run_dir, step=1001, knob="lr", source="ai", command_id="ai-rv-1-0")
    assert [i.id for i in queue.note_applied()] == ["rv-1"]
    tear(queue, "approved")
    assert queue.get("rv-1").status == "applied"  # the applied event implies the approval
    with pytest.raises(ReviewError, match="already applied"):
        queue.approve("rv-1")
    assert len(queued(queue.run_dir)) == 1


def test_a_torn_approval_is_recovered_from_the_commands_it_sent(queue: ReviewQueue) -> None:
    add(queue, mul("lr", 0.5), mul("weight_decay", 2.0), item_id="rv-1")
    queue.approve("rv-1")
    tear(queue, "approved")  # the commands were queued before the approval was recorded
    item = queue.get("rv-1")
    assert (item.status, item.command_ids) == ("approved", ["ai-rv-1-0", "ai-rv-1-1"])
    for how in (lambda: queue.approve("rv-1"), lambda: queue.reject("rv-1")):
        with pytest.raises(ReviewError, match="already approved"):
            how()
    assert queue.expire_due(10_000) == []  # an approved item does not expire
    record_change(queue.run_dir, step=1001, knob="lr", source="ai", command_id="ai-rv-1-0")
    assert queue.get("rv-1").status == "applied"
    assert [i.id for i in queue.note_applied()] == ["rv-1"]
    assert queue.get("rv-1").status == "applied" and len(queued(queue.run_dir)) == 2


def race(run_dir: Path, item_id: str) -> list[str]:
    """Two queues on the same run approve ``item_id`` at once; what each one got."""
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve() -> None:
        rival = ReviewQueue(run_dir, SETTINGS)
        barrier.wait()
        try:
            rival.approve(item_id)
            outcomes.append("approved")
        except ReviewError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=approve) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_two_concurrent_approvals_have_exactly_one_winner(queue: ReviewQueue) -> None:
    for n in range(5):
        add(queue, item_id=f"rv-{n}")
        won, lost = race(queue.run_dir, f"rv-{n}")
        assert won == "approved" and f"proposal rv-{n} was already approved" in lost
    ids = [c["id"] for c in queued(queue.run_dir)]
    assert ids == [f"ai-rv-{n}-0" for n in range(5)]


def test_the_same_proposal_again_is_merged_into_the_pending_one(queue: ReviewQueue) -> None:
    """The bug: the queue got the same ``lr x0.5`` every ~110 steps, 47 proposals."""
    first = add(queue, item_id="d1000-a")
    for n in range(1, 47):
        step = 1000 + 110 * n
        merged = add(queue, mul("lr", 0.5, reason=f"again {n}"), step=step, item_id=f"d{step}-a")
        assert merged.id == first.id
    (item,) = queue.items(current_step=1000)
    assert len(item.merged_ids) == 46 and item.merged_steps[-1] == 1000 + 110 * 46
    assert item.expires_after_step == 1000 + 110 * 46 + 500  # the latest proposal's expiry
    assert queue.get("d1110-a").id == first.id  # a merged decision finds its item
    assert add(queue, item_id="d1110-a").id == first.id  # re-adding a merged id: a no-op
    assert len(queue.items(current_step=1000)) == 1
    other = add(queue, mul("lr", 0.25), step=6000, item_id="d6000-b")
    assert other.id == "d6000-b"  # different actions: a new item
    queue.reject(first.id, "not now")
    assert add(queue, step=7000, item_id="d7000-c").id == "d7000-c"  # nothing pending to merge into


def test_approved_commands_say_what_they_are_for(queue: ReviewQueue) -> None:
    p = proposal(mul("lr", 0.1), mul("weight_decay", 2.0)).model_copy(update={"kind": "divergence"})
    verdicts = check(p, GuardContext.from_run(queue.run_dir), queue.settings)
    queue.add(queue.new_item(step=1000, proposal=p, verdicts=verdicts, item_id="rv-1"))
    approval = queue.approve("rv-1", edits=[mul("weight_decay", 1.5)])
    lr, wd = approval.commands
    assert (lr.id, lr.source, lr.proposed_by) == ("ai-rv-1-0", "human", "ai")
    assert (wd.id, wd.source, wd.proposed_by) == ("human-rv-1-1", "human", None)  # edited: theirs
    for command in (lr, wd):
        assert (command.decision_id, command.proposal_id) == ("rv-1", "rv-1")
        assert (command.for_diagnosis, command.intent, command.segment) == ("divergence", "set", 0)
    shown = [a.describe() for a in queue.get("rv-1").approved_actions()]
    assert shown == ["lr x0.1", "weight_decay x1.5"]


def test_a_closed_run_approves_nothing(queue: ReviewQueue) -> None:
    add(queue, item_id="rv-1")
    state = read_kernel_state(queue.run_dir)
    assert state is not None
    write_kernel_state(queue.run_dir, state.model_copy(update={"status": "closed"}))
    with pytest.raises(ReviewError, match=r"the run in .* is closed \(its kernel stopped at step"):
        queue.approve("rv-1")
    assert queue.get("rv-1").status == "pending" and queued(queue.run_dir) == []


def test_a_run_whose_process_died_approves_nothing(queue: ReviewQueue) -> None:
    """kill -9 leaves kernel.json saying "running": the dead pid says otherwise."""
    add(queue, item_id="rv-1")
    state = read_kernel_state(queue.run_dir)
    assert state is not None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_kernel_state(
        queue.run_dir,
        state.model_copy(
            update={"status": "running", "pid": dead.pid, "host": socket.gethostname()}
        ),
    )
    with pytest.raises(ReviewError, match=r"is over \(its process is gone\)"):
        queue.approve("rv-1")
    assert queue.get("rv-1").status == "pending" and queued(queue.run_dir) == []


OLD_ITEM = (
    '{"event": "proposed", "id": "rv-old", "at": 1700000000.0, "step": 1000, "item": '
    '{"id": "rv-old", "step": 1000, "created_at": 1700000000.0, "diagnoses": [], "proposal": '
    '{"proposer": "ai", "diagnosis": "flat", "actions": [{"knob": "lr", "multiplier": 0.5}], '
    '"tokens_in": 900, "tokens_out": 80, "cost_usd": 0.0012}, "verdicts": [], '
    '"cost_usd": 0.0012, "status": "pending", "expires_after_step": 1500}}'
)
"""A queue line as written before items had a ``usage`` (a flat ``cost_usd``)."""


def test_an_item_written_before_usage_is_read_into_usage(queue: ReviewQueue) -> None:
    queue.path.parent.mkdir(parents=True, exist_ok=True)
    queue.path.write_text(OLD_ITEM + "\n")
    item = queue.get("rv-old")
    assert item.usage == Usage(cost_usd=0.0012)
    assert item.proposal.usage == Usage(tokens_in=900, tokens_out=80, cost_usd=0.0012)
    assert item.status == "pending"


def test_a_new_item_carries_its_proposals_usage(queue: ReviewQueue) -> None:
    p = proposal(mul("lr", 0.5)).model_copy(update={"usage": Usage(tokens_in=5, cost_usd=0.5)})
    item = queue.add(queue.new_item(step=1000, proposal=p, verdicts=[]))
    assert queue.get(item.id).usage == p.usage
