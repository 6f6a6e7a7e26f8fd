"""How fast ``metrics.jsonl`` grows, with and without a logging cadence (prints figures).

A loop of 2,000 steps a second logging 50 metrics (49 training values and, every 500
steps, a validation loss) is simulated for ``--seconds`` of wall time (stamped, not
waited), written by the kernel's ``MetricsWriter``; the file's size is scaled to an hour.

Run: ``.venv/bin/python benchmarks/metric_volume.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from kernel.metrics import METRICS_FILE, MetricsWriter

STEPS_PER_S, METRICS, VAL_EVERY = 2000, 50, 500
CADENCES: list[tuple[str, dict[str, float]]] = [
    ("every step (default)", {}),
    ("metrics_every=10", {"every": 10}),
    ("metrics_every=100", {"every": 100}),
    ("metrics_max_per_s=10", {"max_per_s": 10.0}),
]


def bytes_per_hour(seconds: float, **cadence: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        writer = MetricsWriter(tmp, **cadence)  # type: ignore[arg-type]
        steps = int(seconds * STEPS_PER_S)
        for step in range(steps):
            metrics = {f"train/m{i}": 1.0 / (step + i + 1) for i in range(METRICS - 1)}
            metrics["lr"] = 3e-4
            if step % VAL_EVERY == 0:
                metrics["val/loss"] = 2.0 / (step + 1)
            writer.add(step, 1.7e9 + step / STEPS_PER_S, metrics)
            if step % 500 == 499:
                writer.flush()
        writer.flush()
        path = Path(tmp) / METRICS_FILE
        size = path.stat().st_size
        lines = len(path.read_bytes().splitlines())
    return size * 3600 / seconds, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{STEPS_PER_S} steps/s, {METRICS} metrics a step, {args.seconds:g} s simulated")
    for name, cadence in CADENCES:
        per_hour, lines = bytes_per_hour(args.seconds, **cadence)
        print(f"  {name:24s} {per_hour / 1e9:8.3f} GB/hour  ({lines} records)")


if __name__ == "__main__":
    main()
