"""A synthetic run directory for the autopilot benchmarks: 20 metrics, a long history.

Written directly in the kernel's formats (``metrics.jsonl`` lines and a ``kernel.json`` with
the usual optimizer knobs), so the autopilot reads exactly what it reads from a real run.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from pathlib import Path

from kernel.knobs import KnobSpec
from kernel.state import KernelState, write_kernel_state

NAMES = (
    ["train/loss", "val/loss", "val/acc", "lr", "grad/norm"]
    + [f"train/loss_{k}" for k in ("ce", "aux", "reg")]
    + [f"val/loss_{k}" for k in ("ce", "aux", "reg")]
    + [f"layer{i}/grad_norm" for i in range(5)]
    + ["throughput", "gpu/mem", "data/time", "weight/norm"]
)
assert len(NAMES) == 20


def value(name: str, step: int, rng: random.Random) -> float:
    """A plausible, slowly improving, noisy value of ``name`` at ``step``."""
    decay = math.exp(-step / 3000)
    if "acc" in name:
        return 1 - 0.9 * decay + rng.gauss(0, 0.01)
    if name == "lr":
        return 1e-3
    if "loss" in name:
        return 0.2 + 2 * decay + rng.gauss(0, 0.03)
    return 1 + 0.5 * decay + rng.gauss(0, 0.05)


def record(step: int, rng: random.Random) -> str:
    metrics = {n: value(n, step, rng) for n in NAMES}
    return json.dumps({"step": step, "wall_time": time.time(), "metrics": metrics}) + "\n"


def write_run(run_dir: Path, records: int, seed: int = 0) -> random.Random:
    """``records`` steps of all 20 metrics, and a kernel.json; returns the generator."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(record(step, rng) for step in range(1, records + 1))
    write_kernel_state(run_dir, kernel_state(records))
    return rng


def append(run_dir: Path, start: int, count: int, rng: random.Random) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.writelines(record(step, rng) for step in range(start, start + count))


def kernel_state(last_step: int) -> KernelState:
    now = time.time()
    knobs = [
        KnobSpec(name="lr", kind="float", lo=0.0, hi=10.0, scale="log", value=1e-3),
        KnobSpec(name="weight_decay", kind="float", lo=0.0, hi=1.0, value=0.01),
        KnobSpec(name="grad_clip", kind="float", lo=0.0, hi=1e6, value=0.0),
    ]
    return KernelState(
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=now,
        heartbeat=now,
        last_step=last_step,
        key_metric="val/loss",
        key_metric_mode="min",
        knobs=knobs,
    )
