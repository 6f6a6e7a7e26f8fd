"""The closed-loop bench: real training of each task under each policy, seeds, an oracle.

``run_bench`` plans the jobs (policy runs, Optuna searches, the oracle's grid sweep per task
setup), runs them on ``workers`` processes with a progress bar, and aggregates the results
into a ``BenchReport``. Everything in it was measured by training; the oracle is the best
grid point (trained without the task's loop bug, if it has one), not a number chosen by hand.
``mode="live"`` runs the autopilot's policies as their own processes beside a paced
training; ``none``, ``tune`` and the oracle are the same in both modes.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from pathlib import Path
from typing import TypeVar

from autopilot.config import Settings
from evals.bench.aggregate import cells_for, oracle_of
from evals.bench.jobs import AUTOPILOT_MODES, DEFAULT_STEP_MS, Job, execute, worker_init
from evals.errors import EvalError
from evals.results import BENCH_POLICIES, BenchMode, BenchReport, BenchRun, OracleResult
from evals.results_log import git_commit
from evals.tasks import SETUPS, TASKS, TaskConfig
from kernel.metric_names import MetricMode

KEY_METRIC = "val/loss"
DEFAULT_TRIALS = 6
_Item = TypeVar("_Item")
_Out = TypeVar("_Out")


@dataclass(frozen=True, kw_only=True)
class BenchPlan:
    """What to run. ``steps`` shortens every run (tests); ``None`` keeps each task's."""

    tasks: list[str]
    policies: list[str]
    seeds: int = 3
    trials: int = DEFAULT_TRIALS
    workers: int = 2
    oracle: bool = True
    steps: int | None = None
    settings: Settings = field(default_factory=Settings)
    mode: BenchMode = "lockstep"
    step_ms: float = DEFAULT_STEP_MS
    """``live``: milliseconds per training step (the loop sleeps the rest of each)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise EvalError(
                f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)} "
                "(or a setup name such as digits for all of its tasks, or all)"
            )
        bad = [p for p in self.policies if p not in BENCH_POLICIES]
        if bad:
            raise EvalError(f"unknown policy {bad[0]!r}; choose from {', '.join(BENCH_POLICIES)}")
        if self.seeds < 1 or self.trials < 1 or self.workers < 1:
            raise EvalError("--seeds, --trials and --workers must be at least 1")
        if self.mode not in ("lockstep", "live"):
            raise EvalError(f"mode must be lockstep or live, got {self.mode!r}")
        if not 0 <= self.step_ms <= 10_000:
            raise EvalError(f"--step-ms must be within [0, 10000], got {self.step_ms}")


def resolve_tasks(spec: str) -> list[str]:
    """``all``, or a comma-separated list of task names and setup names (all its tasks)."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            names += list(TASKS)
        elif part in SETUPS:
            names += [name for name, task in TASKS.items() if task.setup.name == part]
        else:
            names.append(part)
    return list(dict.fromkeys(names))


def plan_jobs(plan: BenchPlan) -> list[Job]:
    """Every job of ``plan``: the slow ones (searches) first, so the pool ends evenly."""
    jobs: list[Job] = []
    for task, seed in product(plan.tasks, range(plan.seeds)):
        if "tune" in plan.policies:
            jobs.append(
                Job(kind="tune", task=task, seed=seed, trials=plan.trials, steps=plan.steps)
            )
    for task, policy, seed in product(plan.tasks, plan.policies, range(plan.seeds)):
        if policy != "tune":
            piloted = policy in AUTOPILOT_MODES
            job = Job(
                kind="policy",
                task=task,
                policy=policy,  # type: ignore[arg-type]
                seed=seed,
                steps=plan.steps,
                mode=plan.mode if piloted else "lockstep",
                step_ms=plan.step_ms,
            )
            jobs.append(job)
    if plan.oracle:
        jobs += grid_jobs(plan.tasks, plan.seeds, steps=plan.steps)
    return jobs


def grid_jobs(tasks: list[str], seeds: int, *, steps: int | None = None) -> list[Job]:
    """The oracle's sweep: every grid point of each setup among ``tasks``, on every seed."""
    return [
        Job(kind="grid", task=base.name, seed=seed, params=point, steps=steps)
        for base in _setups(tasks).values()
        for point, seed in product(_grid(base), range(seeds))
    ]


def run_bench(
    plan: BenchPlan, out: Path, *, on_done: Callable[[Job, BenchRun], None] | None = None
) -> BenchReport:
    """Run ``plan``; the report aggregates every run (policy run directories stay in
    ``out/runs`` for inspection)."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(plan)
    done: list[tuple[Job, BenchRun]] = []
    for job, result in _execute_all(jobs, out, plan):
        done.append((job, result))
        if on_done is not None:
            on_done(job, result)
    runs = [r for j, r in done if j.kind != "grid"]
    oracle_by_task = oracles(plan.tasks, [(j, r) for j, r in done if j.kind == "grid"])
    mode: MetricMode = "min"
    healthy = frozenset(t for t in plan.tasks if TASKS[t].healthy)
    cells = cells_for(plan.tasks, plan.policies, runs, oracle_by_task, mode, healthy=healthy)
    return BenchReport(
        mode=plan.mode,
        step_ms=plan.step_ms if plan.mode == "live" else None,
        tasks=plan.tasks,
        policies=plan.policies,
        seeds=plan.seeds,
        key_metric=KEY_METRIC,
        key_mode=mode,
        setups={t: TASKS[t].setup.name for t in plan.tasks},
        descriptions={t: TASKS[t].description for t in plan.tasks},
        runs=sorted(runs, key=lambda r: (plan.tasks.index(r.task), r.policy, r.seed)),
        oracles=list({o.setup: o for o in oracle_by_task.values()}.values()),
        cells=cells,
        wall_s=time.monotonic() - started,
        workers=plan.workers,
        git_commit=git_commit(),
        created=time.time(),
    )


def _execute_all(jobs: list[Job], out: Path, plan: BenchPlan) -> Iterator[tuple[Job, BenchRun]]:
    return pool_map(partial(execute, out=out, settings=plan.settings), jobs, plan.workers)


def pool_map(
    work: Callable[[_Item], _Out], items: list[_Item], workers: int
) -> Iterator[tuple[_Item, _Out]]:
    """``work`` on each item, as each finishes, in ``workers`` spawned processes of one
    training thread each (in this process, in order, with one worker). ``work`` must be
    picklable: a module-level function, or a ``partial`` of one."""
    if workers == 1:
        worker_init()
        for item in items:
            yield item, work(item)
        return
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=worker_init) as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in cf.as_completed(futures):
            yield futures[future], future.result()


def _setups(tasks: list[str]) -> dict[str, TaskConfig]:
    """One task per setup among ``tasks``: the one the oracle's grid points train from."""
    chosen: dict[str, TaskConfig] = {}
    for name in tasks:
        task = TASKS[name]
        chosen.setdefault(task.setup.name, task)
    return chosen


def _grid(task: TaskConfig) -> list[tuple[tuple[str, float], ...]]:
    grid = task.setup.grid
    keys = sorted(grid)
    return [tuple(zip(keys, values, strict=True)) for values in product(*(grid[k] for k in keys))]


def oracles(tasks: list[str], grid_runs: list[tuple[Job, BenchRun]]) -> dict[str, OracleResult]:
    """Each task's oracle (``oracle_of`` its setup's grid runs); tasks without any absent."""
    by_setup: dict[str, list[BenchRun]] = {}
    for job, run in grid_runs:
        by_setup.setdefault(TASKS[job.task].setup.name, []).append(run)
    oracles = {
        setup: oracle_of(setup, runs, "min", sum(r.wall_s for r in runs))
        for setup, runs in by_setup.items()
    }
    return {t: oracles[TASKS[t].setup.name] for t in tasks if TASKS[t].setup.name in oracles}
