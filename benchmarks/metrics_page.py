"""How long the metrics route's ``views.metrics_page`` takes on a long run (prints a table).

A run of ``--steps`` steps of 20 metrics (``_synthetic_run.write_run``) is paged as the
dashboard pages it (``offset=0``, ``max_points=2000``), for all 20 series and for four:
the first open (nothing cached: every line parsed), the same without orjson (every line
validated by ``MetricRecord``, as before the bulk parse), a second open of the unchanged
run (the cached page), and an open after 100 more steps (the new lines read, the columns
downsampled again). Each figure is the best of ``--repeats``.

Run: ``.venv/bin/python benchmarks/metrics_page.py [--steps 100000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _synthetic_run import append, write_run

from autopilot.service import metric_lines
from autopilot.service.metric_columns import COLUMNS
from autopilot.service.views import metrics_page
from kernel.metrics import METRICS_FILE

FOUR = ["grad/norm", "lr", "train/loss", "val/acc"]
MAX_POINTS = 2000


def best(repeats: int, before: Callable[[], object], run: Callable[[], object]) -> float:
    took = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        run()
        took.append(time.perf_counter() - start)
    return min(took)


def figures(run_dir: Path, steps: int, names: list[str] | None, repeats: int) -> list[float]:
    """The four timings on a run of ``steps`` steps written afresh."""
    rng = write_run(run_dir, steps)
    last = [steps]

    def page() -> object:
        return metrics_page(run_dir, 0, names, MAX_POINTS)

    def model_road() -> object:
        loads, metric_lines._loads = metric_lines._loads, None
        try:
            return page()
        finally:
            metric_lines._loads = loads

    def grow() -> None:
        page()
        append(run_dir, last[0] + 1, 100, rng)
        last[0] += 100

    return [
        best(repeats, COLUMNS.clear, page),
        best(repeats, COLUMNS.clear, model_road),
        best(repeats, page, page),
        best(repeats, grow, page),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        write_run(run_dir, args.steps)
        size = (run_dir / METRICS_FILE).stat().st_size
        print(f"{args.steps:,} steps of 20 metrics ({size / 1e6:.0f} MB), max_points={MAX_POINTS}")
        print(f"best of {args.repeats}\n")
        print("| series | first open | no orjson | again, unchanged | again, +100 steps |")
        print("|---|---:|---:|---:|---:|")
        for label, names in (("all 20", None), ("4", FOUR)):
            took = figures(run_dir, args.steps, names, args.repeats)
            cells = " | ".join(f"{s:.3f} s" for s in took)
            print(f"| {label} | {cells} |")
        write_run(run_dir, args.steps)
        COLUMNS.clear()
        metrics_page(run_dir, 0, None, MAX_POINTS)
        print(f"\ncached columns of the run: {COLUMNS.nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
