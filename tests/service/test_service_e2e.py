"""End to end: a training loop whose own code spikes its lr, under the service in mode
``auto`` set through the API. The kernel's reflex rewinds, and the autopilot the service
ticks answers with a rules change the kernel applies (as ``watch`` would)."""

from __future__ import annotations

import threading
from pathlib import Path

from _service_runs import AUTH, poll
from fastapi.testclient import TestClient
from spiked_loop import SPIKE_STEP, SpikedLoop

from autopilot.service import Fleet
from kernel import read_ledger

API = "/api/v1"


def test_the_service_ticks_a_run_and_its_rules_answer_a_spike(
    client: TestClient, fleet: Fleet, root: Path
) -> None:
    run_dir = root / "spiked"
    loop = SpikedLoop(run_dir, flush_interval_s=0.0)
    answered = threading.Event()

    def pace(step: int) -> None:
        if step == 1:
            client.put(f"{API}/runs/spiked/mode", json={"mode": "auto"}, headers=AUTH)
            fleet.start()
            poll(lambda: client.get(f"{API}/runs/spiked/mode").json()["pilot"]["state"]
                 == "ticking", what="the service's autopilot")  # fmt: skip
        if step > SPIKE_STEP:
            answered.wait(0.01)  # the autopilot reads each step while it answers

    def rules_rows() -> list:
        rows = [r for r in read_ledger(run_dir) if r.source == "rules" and r.decision == "applied"]
        if rows:
            answered.set()
        return rows

    watcher = threading.Thread(target=lambda: poll(rules_rows, timeout=120, what="a rule"))
    watcher.start()
    loop.train(SPIKE_STEP + 400, on_step=pace)
    watcher.join()
    (reflex,) = [r for r in read_ledger(run_dir) if r.source == "kernel"]
    rules = rules_rows()
    assert reflex.step == SPIKE_STEP + 1
    assert rules and rules[0].knob == "lr" and rules[0].for_diagnosis == "divergence"
    decisions = client.get(f"{API}/runs/spiked/decisions").json()
    assert any(d["record"]["route"] for d in decisions)
