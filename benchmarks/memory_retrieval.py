"""What memory costs a deciding tick: retrieval and the prompt's memory lines.

A SQLite store holds earlier runs of the task at hand and of other tasks (10 measured
interventions each). Measured on the real ``RunMemory`` a watcher uses:

- ``first read``: the run's first retrieval (every earlier run and intervention read once,
  then grouped into lessons): paid once per run;
- ``per tick``: what a deciding tick pays from then on: the lessons for its diagnosis and
  phase, the memory lines with their token count, and the start plan (which a tick looks
  at once per knob cooldown);
- ``write``: one intervention written (a tick that saw a new change or a measured effect).

Target (issue 13): retrieval and a prompt with memory add < 1 ms to a deciding tick.

Run: ``.venv/bin/python benchmarks/memory_retrieval.py [--runs 10,100,1000]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from autopilot.config import MemorySettings, Settings
from autopilot.decisions import DecisionLog
from autopilot.remember import RunMemory
from autopilot.tokens import count_tokens
from kernel import KernelState, KnobSpec, TaskInfo
from memory import InterventionRecord, RunRecord, TaskFingerprint, open_store

KINDS = ("plateau", "oscillation", "overfitting")
TASK = TaskInfo(task="digits", model="MLP", optimizer="AdamW", n_params=19_146)


def _fill(url: str, runs: int) -> None:
    store = open_store(url)
    for i in range(runs):
        task = "digits" if i % 4 == 0 else f"other-{i % 7}"  # a quarter are this task's
        fingerprint = TaskFingerprint(task=task, model="MLP", optimizer="AdamW", n_params=19_146)
        run = RunRecord(
            run_id=f"r{i}",
            run_dir=f"/runs/r{i}",
            started_at=1_800_000_000.0 + i,
            fingerprint=fingerprint,
            start_knobs={"lr": 1e-3, "weight_decay": 1e-4},
        )
        store.put_run(run)
        for j in range(10):
            store.add_intervention(
                InterventionRecord(
                    run_id=run.run_id,
                    step=100 * (j + 1),
                    source="rules",
                    kind=KINDS[j % 3],
                    knob="lr" if j % 2 else "weight_decay",
                    before=1e-3,
                    after=5e-4 if j % 3 else 2e-3,
                    phase=(j + 1) / 10,
                    effect_rel=0.05 - 0.01 * j,
                    verdict=("better", "neutral", "worse")[(i + j) % 3],
                    command_id=f"c{i}-{j}",
                )
            )
    store.close()


def bench(runs: int, ticks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'memory.sqlite'}"
        _fill(url, runs)
        settings = Settings(memory=MemorySettings(url=url))
        memory = RunMemory(Path(tmp) / "run", settings)
        knobs = [
            KnobSpec(name="lr", kind="float", value=1e-3, lo=1e-7, hi=1.0),
            KnobSpec(name="weight_decay", kind="float", value=1e-4, lo=0.0, hi=1.0),
        ]
        kernel = KernelState(
            pid=1,
            host="bench",
            started_at=time.time(),
            heartbeat=time.time(),
            task=TASK,
            knobs=knobs,
        )
        memory.begin(kernel, "val/loss", "min")
        started = time.perf_counter()
        memory.lessons("plateau", 0.1)
        memory.notes()
        first = time.perf_counter() - started
        per_tick = []
        for t in range(ticks):
            started = time.perf_counter()
            memory.lessons(KINDS[t % 3], (t % 100) / 100)
            count_tokens(memory.notes())
            memory.start_plan({"lr": 1e-3, "weight_decay": 1e-4})
            per_tick.append(time.perf_counter() - started)
        log = DecisionLog(Path(tmp) / "run")
        writes = []
        for t in range(20):
            row = {
                "seq": t, "step": 10 * t, "wall_time": 0.0, "decision": "applied",
                "command_id": f"w{t}", "source": "rules", "op": "set", "knob": "lr",
                "before": 1e-3, "after": 5e-4, "for_diagnosis": "plateau",
            }  # fmt: skip
            started = time.perf_counter()
            memory.note([row], [], max_steps=1000, log=log)
            writes.append(time.perf_counter() - started)
        memory.close()
    return {
        "first": first * 1e3,
        "tick_median": statistics.median(per_tick) * 1e3,
        "tick_p90": sorted(per_tick)[int(0.9 * len(per_tick))] * 1e3,
        "write_median": statistics.median(writes) * 1e3,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10,100,1000")
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    print("earlier runs  first read ms  per tick ms (median / p90)  write ms (median)")
    worst = 0.0
    for runs in (int(r) for r in args.runs.split(",")):
        r = bench(runs, args.ticks)
        worst = max(worst, r["tick_p90"])
        print(
            f"{runs:>12}  {r['first']:>13.1f}  {r['tick_median']:>10.3f} / {r['tick_p90']:<10.3f}"
            f"  {r['write_median']:>10.2f}"
        )
    verdict = "meets" if worst < 1.0 else "misses"
    print(f"target < 1 ms per deciding tick (p90, retrieval and memory lines): {verdict}")


if __name__ == "__main__":
    main()
