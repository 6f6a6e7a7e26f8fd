"""How long one autopilot tick takes in rules mode, at 1k, 10k and 100k records of history.

A run with 20 metrics logged at every step; between ticks the "training" appends 10 steps.
The autopilot reads only the bytes appended since the last tick, so the tick time must not
depend on the history's length. Reported: the first tick (reading the start of the run,
at most the last 4 MB of it), and the median and p90 of the next ticks, split into ticks
that found the run healthy and ticks that went on to propose, guard and record a decision.

Run: ``.venv/bin/python benchmarks/autopilot_tick.py [--ticks 300]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _synthetic_run import append, write_run

from autopilot.config import Settings
from autopilot.quiet_gc import quiet_gc
from autopilot.watch import Autopilot


@dataclass(frozen=True, kw_only=True)
class TickTimes:
    """Seconds: the first tick, then each tick that found the run healthy or decided."""

    first: float
    healthy: list[float]
    decided: list[float]


def bench(history: int, ticks: int) -> TickTimes:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        rng = write_run(run_dir, history)
        # every tick decides (no repeat suppression) so that the full path is measured too
        settings = Settings.model_validate(
            {  # the memory store in the scratch directory, not the user's
                "cadence": {"repeat_after_steps": 1},
                "memory": {"url": f"sqlite:///{Path(tmp) / 'memory.sqlite'}"},
            }
        )
        with Autopilot(run_dir, mode="auto", settings=settings) as pilot:
            t0 = time.perf_counter()
            pilot.tick()
            first = time.perf_counter() - t0
            healthy: list[float] = []
            decided: list[float] = []
            step = history + 1
            for _ in range(ticks):
                append(run_dir, step, 10, rng)
                step += 10
                t0 = time.perf_counter()
                state = pilot.tick()
                took = time.perf_counter() - t0
                (decided if state.get("outcome") == "diagnosed" else healthy).append(took)
    return TickTimes(first=first, healthy=healthy, decided=decided)


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return f"{1000 * values[min(len(values) - 1, int(q * len(values)))]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    quiet_gc()  # as `autopilot watch` does
    print("history   first tick   healthy ticks: median / p90   deciding ticks: median / p90")
    for history in (1_000, 10_000, 100_000):
        r = bench(history, args.ticks)
        h, d = r.healthy, r.decided
        print(
            f"{history:>7}   {1000 * r.first:8.1f} ms   "
            f"{_ms(h, 0.5):>6} / {_ms(h, 0.9):>6} ms (n={len(h)})        "
            f"{_ms(d, 0.5):>6} / {_ms(d, 0.9):>6} ms (n={len(d)})"
        )
    print(f"({args.ticks} ticks per history length; 20 metrics, 10 new steps per tick)")


if __name__ == "__main__":
    main()
