"""How often the kernel's reflexes would trip on recorded runs: its loss and gradient-norm
watch (``kernel.reflexes.Reflex``) fed each run's metric records in order, as the kernel
sees them at ``log``. A reflex must never trip on a healthy run; a divergence should trip it.

    python -m evals.reflex_trips evals/corpus runs/real-logs/runs

Each argument is a run directory (with ``metrics.jsonl``) or a folder of them. A recorded
run is only logged every few steps, so a trip here is judged on fewer readings than the
kernel has live; the thresholds are the kernel's defaults (``KernelSettings``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.runs import RecordedRun, load_run
from kernel import KernelSettings
from kernel.metrics import METRICS_FILE
from kernel.reflexes import Reflex, Trip


@dataclass(frozen=True, kw_only=True)
class RunTrips:
    """The trips of one recorded run (a trip's reading does not join the levels, so a
    diverged run trips at every later reading)."""

    run: str
    healthy: bool
    kinds: tuple[str, ...]
    trips: list[Trip]


def run_trips(run: RecordedRun, settings: KernelSettings | None = None) -> RunTrips:
    """Feed ``run``'s records (its last segment) to a fresh ``Reflex``."""
    reflex = Reflex((settings or KernelSettings()).reflex_settings())
    trips = [t for r in run.records() if (t := reflex.watch(r.step, r.metrics)) is not None]
    return RunTrips(
        run=run.name,
        healthy=run.labels.healthy,
        kinds=tuple(e.kind for e in run.labels.events),
        trips=trips,
    )


def find_runs(paths: Sequence[str | Path]) -> list[RecordedRun]:
    found = []
    for path in map(Path, paths):
        dirs = [path] if (path / METRICS_FILE).exists() else sorted(path.iterdir())
        found += [load_run(d) for d in dirs if (d / METRICS_FILE).exists()]
    return found


def report(results: Sequence[RunTrips]) -> str:
    """The counts, then one line per run that tripped."""
    healthy = [r for r in results if r.healthy]
    tripped = [r for r in results if r.trips]
    lines = [
        f"runs: {len(results)}; healthy: {len(healthy)}, of which tripped: "
        f"{sum(1 for r in healthy if r.trips)}; with a labelled event: "
        f"{len(results) - len(healthy)}, of which tripped: "
        f"{sum(1 for r in tripped if not r.healthy)}"
    ]
    for r in tripped:
        first = r.trips[0]
        label = ", ".join(r.kinds) or "healthy"
        lines.append(f"  {r.run} ({label}): {len(r.trips)} trips, first {first.describe()}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.reflex_trips", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run directories or folders of them")
    args = parser.parse_args(argv)
    print(report([run_trips(run) for run in find_runs(args.paths)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
