"""After the kernel's reflex rewinds a spike, the autopilot sees the rewind, not the spike:
its windows go back to the snapshot, a change made before it is not measured on the
abandoned curve, and the rules keep lr lower from the restored value (one decision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spiked_loop import SPIKE_STEP, SpikedLoop

from autopilot.config import Settings
from autopilot.decisions import DecisionLog
from autopilot.watch import Autopilot
from kernel import read_ledger

LOCKSTEP: dict[str, Any] = {"flush_interval_s": 0.0, "heartbeat_interval_s": 3600.0}


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"budget": {"day_ledger": str(tmp_path / "day.jsonl")}})


def test_the_rules_keep_lr_lower_after_a_reflex_and_see_no_spike(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    loop = SpikedLoop(run_dir, **LOCKSTEP)
    with Autopilot(run_dir, mode="auto", settings=_settings(tmp_path)) as pilot:
        seen_spike: list[float] = []

        def tick(step: int) -> None:
            if step % 10 == 0:
                state = pilot.tick()
                losses = state.get("windows", {}).get("train/loss", [[], []])[1]
                seen_spike.extend(v for v in losses if v > 5.0)

        loop.train(220, on_step=tick)
    rows = read_ledger(run_dir)
    (reflex,) = [r for r in rows if r.source == "kernel"]
    assert reflex.step == SPIKE_STEP + 1 and reflex.snapshot_step is not None
    after = [r for r in rows if r.source == "rules" and r.decision == "applied"]
    assert [(r.knob, r.after) for r in after] == [("lr", 0.005)]  # 0.01 restored, then x0.5
    assert after[0].for_diagnosis == "divergence" and (after[0].step or 0) > SPIKE_STEP + 1
    assert not seen_spike  # the abandoned trajectory never entered the windows
    records = [v.record for v in DecisionLog(run_dir).read()]
    decided = [d for r in records for d in r.diagnoses if d.kind == "divergence"]
    assert decided and all(d.evidence.get("reflex") for d in decided)


def test_status_lists_the_snapshots_and_the_reflex_rewinds(tmp_path: Path, capsys) -> None:
    from autopilot.cli import main

    loop = SpikedLoop(tmp_path, **LOCKSTEP)
    loop.train(SPIKE_STEP + 5)
    assert main(["--dir", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "snapshots   1, 51" in out
    assert f"reflexes    1 rewind(s) of 1 trip(s); last at step {SPIKE_STEP + 1}: applied" in out
