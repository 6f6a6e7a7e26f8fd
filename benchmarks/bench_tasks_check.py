"""Evidence for the benchmark's task suite (``evals/tasks``): a benchmark that prints figures.

For every task, over ``--seeds`` seeds, the final ``val/loss`` (median [min, max]) of:
- its start configuration;
- the hand-rescued variant (bad tasks only): at step ``RESCUE_STEP`` commands appended from
  ``on_tick`` set every knob that differs from the setup's good configuration back to the good
  value, and the kernel applies them at the next step. A task with a loop bug is rescued at
  the tick of the bug's step (after one bad update; ``RESCUE_STEP`` when that is later): its
  knob is set back to the good value, after a rewind to the snapshot before the bug when the
  bug raised the knob (a spike's update has wrecked the weights by then);
- its setup's good configuration;
and the wall seconds per run (one CPU thread per run, ``--jobs`` runs side by side). Every run
has the kernel's reflexes off (``without_reflexes``): the figures are the tasks' own, not
what the autopilot's fast half makes of them.

Then, per setup, the oracle's grid sweep: the best grid point and where the good configuration
ranks among the grid points.

Checks (``ok`` or ``FAIL``):
- ``worse``: a bad start ends above the good configuration on every seed. The seed also draws
  the data split, so runs are compared seed by seed; ``gap`` is the median of those gaps.
- ``apart``: and above it on every pair of seeds (the bad start's best seed is worse than the
  good configuration's worst): the gap exceeds the spread over seeds.
- ``rescue``: the rescue wins back at least half of the gap between the medians.
- the good configuration's median is within 10 % (or one seed spread) of the best grid point's.
- ``time``: a run takes at most ``BUDGET_S`` seconds.
The exit status is 1 when a check fails.

Run: ``.venv/bin/python benchmarks/bench_tasks_check.py [--seeds 3] [--jobs 2] [--tasks all]
[--per-seed]`` (a few minutes on 2 cores; ``--tasks`` names tasks or setups, and checks them
against their setups' good configurations and grids).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import torch

from evals.bench import resolve_tasks
from evals.tasks import SETUPS, TASKS, Setup, TaskConfig, train_task
from evals.tasks.train import LOCKSTEP, without_reflexes
from kernel import Command, append_command, new_command_id

RESCUE_STEP = 100
BUDGET_S = 1.0
RECOVERED = 0.5  # share of the gap the rescue must win back
ORACLE_SLACK = 0.10

Knobs = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Job:
    """One training run: a task from static ``knobs``, rescued to ``rescue`` or not."""

    task: str
    seed: int
    knobs: Knobs
    rescue: Knobs = ()


@dataclass(frozen=True)
class Result:
    final: float
    wall_s: float


def good_task(setup: Setup) -> TaskConfig:
    return next(t for t in TASKS.values() if t.setup is setup and t.healthy)


def rescue_changes(task: TaskConfig) -> Knobs:
    """The knobs whose start value differs from the good configuration's (a loop bug's knob),
    at the good value."""
    good = good_task(task.setup).start
    if task.bug is not None:
        return ((task.bug.knob, good[task.bug.knob]),)
    return tuple(sorted((k, v) for k, v in good.items() if task.start[k] != v))


def rescue_step(task: TaskConfig) -> int:
    """The tick at which the rescue's commands are appended (applied at the next step)."""
    return RESCUE_STEP if task.bug is None else max(task.bug.step, RESCUE_STEP)


def _rescuer(run_dir: Path, task: TaskConfig, changes: Knobs) -> Callable[[int], None]:
    bug = task.bug

    def on_tick(step: int) -> None:
        if step != rescue_step(task):
            return
        if bug is not None and bug.factor > 1:
            rewind = Command(
                id=new_command_id("rescue"),
                source="human",
                op="rewind",
                to="step",
                to_step=bug.step - 1,
                reason="hand rescue: back to before the bug",
            )
            append_command(run_dir, rewind)
        for knob, value in changes:
            command = Command(
                id=new_command_id("rescue"),
                source="human",
                knob=knob,
                value=float(value),
                reason="hand rescue",
            )
            append_command(run_dir, command)

    return on_tick


def run_job(job: Job) -> Result:
    torch.set_num_threads(1)
    task = TASKS[job.task]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        on_tick = _rescuer(run_dir, task, job.rescue) if job.rescue else None
        out = train_task(
            task,
            job.seed,
            run_dir,
            params=dict(job.knobs),
            on_tick=on_tick,
            tick_every=1,
            settings=without_reflexes(LOCKSTEP),
        )
    return Result(final=out.final, wall_s=out.wall_s)


def selected(spec: str) -> dict[str, TaskConfig]:
    """The tasks of ``--tasks`` (names, setup names or ``all``) and their setups' good ones."""
    names = resolve_tasks(spec)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task {unknown[0]!r}; known: {', '.join(TASKS)}")
    setups = {TASKS[n].setup.name for n in names}
    return {n: t for n, t in TASKS.items() if n in names or (t.healthy and t.setup.name in setups)}


def plan(seeds: range, tasks: dict[str, TaskConfig]) -> list[Job]:
    """Every run of the check: each task's start and rescue, each setup's grid."""
    jobs: list[Job] = []
    for name, task in tasks.items():
        start = tuple(sorted(task.start.items()))
        jobs += [Job(name, s, start) for s in seeds]
        if not task.healthy:
            jobs += [Job(name, s, start, rescue_changes(task)) for s in seeds]
    for setup in _setups(tasks):
        good = good_task(setup).name
        for point in setup.grid_points():
            jobs += [Job(good, s, tuple(sorted(point.items()))) for s in seeds]
    return list(dict.fromkeys(jobs))  # a good config is also a grid point: train it once


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} [{min(values):.3f},{max(values):.3f}]"


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _setups(tasks: dict[str, TaskConfig]) -> list[Setup]:
    return [s for s in SETUPS.values() if any(t.setup is s for t in tasks.values())]


def task_rows(
    results: dict[Job, Result], seeds: range, tasks: dict[str, TaskConfig], *, per_seed: bool
) -> list[str]:
    rows = [
        f"{'task':28s} {'start':22s} {'rescued':22s} {'good':22s} {'gap':>6s} {'s/run':>6s}  checks"
    ]
    for name, task in tasks.items():
        start_knobs = tuple(sorted(task.start.items()))
        good = good_task(task.setup)
        good_knobs = tuple(sorted(good.start.items()))
        start = [results[Job(name, s, start_knobs)].final for s in seeds]
        goods = [results[Job(good.name, s, good_knobs)].final for s in seeds]
        worst_s = max(results[Job(name, s, start_knobs)].wall_s for s in seeds)
        mean_s = statistics.mean(results[Job(name, s, start_knobs)].wall_s for s in seeds)
        checks = [f"time {verdict(worst_s <= BUDGET_S)}"]
        rescued_txt, gap_txt = "-", "-"
        if not task.healthy:
            changes = rescue_changes(task)
            rescued = [results[Job(name, s, start_knobs, changes)].final for s in seeds]
            rescued_txt = fmt(rescued)
            gaps = [b - g for b, g in zip(start, goods, strict=True)]  # same seed, same split
            gap_txt = f"{statistics.median(gaps):6.3f}"
            bad_m, good_m = statistics.median(start), statistics.median(goods)
            won = bad_m - statistics.median(rescued)
            share = won / (bad_m - good_m) if bad_m > good_m else float("nan")
            checks[:0] = [
                f"worse {sum(g > 0 for g in gaps)}/{len(gaps)} {verdict(min(gaps) > 0)}",
                f"apart {verdict(min(start) > max(goods))}",
                f"rescue {share:4.0%} {verdict(share >= RECOVERED)}",
            ]
        rows.append(
            f"{name:28s} {fmt(start):22s} {rescued_txt:22s} {fmt(goods):22s} "
            f"{gap_txt:>6s} {mean_s:6.2f}  {', '.join(checks)}"
        )
        if per_seed:
            rows += [_seed_row(results, task, good, s) for s in seeds]
    return rows


def _seed_row(results: dict[Job, Result], task: TaskConfig, good: TaskConfig, seed: int) -> str:
    """One seed's finals: start, rescued (``-`` for a good task), good."""
    start = tuple(sorted(task.start.items()))
    cells = [f"{results[Job(task.name, seed, start)].final:.4f}", "-"]
    if not task.healthy:
        cells[1] = f"{results[Job(task.name, seed, start, rescue_changes(task))].final:.4f}"
    cells.append(f"{results[Job(good.name, seed, tuple(sorted(good.start.items())))].final:.4f}")
    return f"{'  seed ' + str(seed):28s} " + " ".join(f"{c:22s}" for c in cells)


def oracle_rows(
    results: dict[Job, Result], seeds: range, tasks: dict[str, TaskConfig]
) -> list[str]:
    rows = [
        f"{'setup':14s} {'points':>6s}  {'best grid point':40s} {'best':22s} "
        f"{'good':22s} {'rank':>5s}  check"
    ]
    for setup in _setups(tasks):
        good = good_task(setup)
        scored = []
        for point in setup.grid_points():
            finals = [results[Job(good.name, s, tuple(sorted(point.items())))].final for s in seeds]
            scored.append((statistics.median(finals), point, finals))
        scored.sort(key=lambda x: x[0])
        best_m, best_point, best_finals = scored[0]
        good_finals = [
            results[Job(good.name, s, tuple(sorted(good.start.items())))].final for s in seeds
        ]
        good_m = statistics.median(good_finals)
        rank = 1 + [p for _, p, _ in scored].index(good.start)
        slack = max(ORACLE_SLACK * best_m, max(best_finals) - min(best_finals))
        point_txt = ", ".join(f"{k}={v:g}" for k, v in sorted(best_point.items()))
        rows.append(
            f"{setup.name:14s} {len(scored):6d}  {point_txt:40s} {fmt(best_finals):22s} "
            f"{fmt(good_finals):22s} {rank:5d}  "
            f"{verdict(good_m <= best_m + slack)}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_tasks_check.py")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--tasks", default="all", help="task or setup names, or all")
    parser.add_argument("--per-seed", action="store_true", help="print every seed's finals")
    args = parser.parse_args(argv)
    seeds = range(args.seeds)
    tasks = selected(args.tasks)
    jobs = plan(seeds, tasks)
    started = time.monotonic()
    with Pool(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(run_job, jobs, chunksize=1), strict=True))
    rows = task_rows(results, seeds, tasks, per_seed=args.per_seed)
    rows += [""] + oracle_rows(results, seeds, tasks)
    print("\n".join(rows))
    print(f"\n{len(jobs)} runs, {args.jobs} side by side, {time.monotonic() - started:.0f} s")
    return 1 if any("FAIL" in row for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
