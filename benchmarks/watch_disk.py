"""How much disk the watcher's own graph checkpoint takes over a run.

A run with 20 metrics logged at every step; between ticks the "training" appends 10 steps
and the autopilot (rules mode ``auto``) ticks, as ``autopilot watch`` does. Reported: the
largest ``autopilot/graph.sqlite`` and ``graph.sqlite-wal`` seen after any tick, and their
sizes at the end, so a change to the checkpoint's journaling shows up as a figure.

Run: ``.venv/bin/python benchmarks/watch_disk.py [--ticks 2000]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from _synthetic_run import append, write_run

from autopilot.config import Settings
from autopilot.watch import Autopilot


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def bench(ticks: int) -> dict[str, int]:
    """The largest and the final sizes (bytes) of the checkpoint and its WAL."""
    sizes = {"db_max": 0, "wal_max": 0}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        rng = write_run(run_dir, 1000)
        db = run_dir / "autopilot" / "graph.sqlite"
        wal = db.with_name(db.name + "-wal")
        scratch = Settings.model_validate({"memory": {"url": f"sqlite:///{tmp}/memory.sqlite"}})
        with Autopilot(run_dir, mode="auto", settings=scratch) as pilot:
            step = 1001
            for _ in range(ticks):
                append(run_dir, step, 10, rng)
                step += 10
                pilot.tick()
                sizes["db_max"] = max(sizes["db_max"], _size(db))
                sizes["wal_max"] = max(sizes["wal_max"], _size(wal))
            sizes["db_end"], sizes["wal_end"] = _size(db), _size(wal)
        sizes["wal_closed"] = _size(wal)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    sizes = bench(args.ticks)
    print(f"{args.ticks} ticks, 20 metrics, 10 steps a tick:")
    for key, value in sizes.items():
        print(f"  {key:>10}: {value / 1024:10.1f} KiB")


if __name__ == "__main__":
    main()
