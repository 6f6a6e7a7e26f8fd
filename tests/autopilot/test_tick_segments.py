"""A watcher whose run directory is reused by a new training run (a new run segment) starts
that run afresh: its steps count from 0 again, so the old run's windows, tick cadence,
cooldowns and decisions must not carry over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autopilot.watch import Autopilot
from kernel import Kernel, KernelSettings

FLUSH_EVERY_STEP = KernelSettings(
    poll_interval_s=0.0, flush_interval_s=0.0, heartbeat_interval_s=0.0
)


def _train(run_dir: Path, pilot: Autopilot, steps: range) -> dict[str, Any]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    state: dict[str, Any] = {}
    with Kernel(
        run_dir, optimizer=opt, key_metric="train/loss", settings=FLUSH_EVERY_STEP
    ) as kernel:
        for step in steps:
            kernel.log(step, {"train/loss": 1.0 + 1.0 / (step + 1)})
            kernel.step(step)
            if step % 10 == 9:  # the kernel has flushed its metrics
                state = pilot.tick()
    return state


def test_a_new_segment_starts_fresh_windows_and_cadence(tmp_path: Path) -> None:
    pilot = Autopilot(tmp_path, mode="off")
    try:
        first = _train(tmp_path, pilot, range(5000, 5300))
        assert (first["segment"], first["step"]) == (0, 5299)
        second = _train(tmp_path, pilot, range(0, 60))
    finally:
        pilot.close()
    assert second["segment"] == 1
    steps = second["windows"]["train/loss"][0]
    assert steps[0] == 0 and max(steps) == 59  # nothing of step 5000-5299 spliced in
    assert second["due_step"] == 59  # ticks again at once, not after step 5309
    assert second["outcome"] != "idle"
