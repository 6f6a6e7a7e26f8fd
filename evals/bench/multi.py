"""The multi-run bench: how many runs of the same bad start until one is as good as the oracle?

For each bad-start task and scored seed, a *sequence* per policy, run by one worker from
first to last (each run needs what the ones before it left); different sequences run side by
side in the bench's worker pool. The figure is the first run (trial) whose final key metric
is within ``tolerance`` (2 %) of the oracle's, relative, in the metric's direction.

- ``rules``: the autopilot in ``auto`` mode, ``runs`` times, every run given the same memory
  store (``sqlite:///SEQ/memory.sqlite``, a fresh file per task, policy and seed) and the
  same task name (the kernel publishes it in ``kernel.json``): the first run has no memory,
  each later one what the earlier ones left.
- ``online``: the same with the online tuner on (``settings.tune.enabled``).
- ``tune``: Optuna TPE across full runs (``evals.bench.jobs.search_trials``, the starting
  configuration first), ``trials`` at most; ``random``: the same with random search. After
  each trial that is the best so far on the search seed, its configuration trains once on
  the scored seed; a search's figure is the first trial whose best so far scores within the
  tolerance there, and it stops at that trial. Both draw from the scored seed: TPE's random
  start-up (``startup_trials``: 6 of 12) is then random search's first trials, the same
  configurations, so the two differ from TPE's first modelled trial on (common random
  numbers: what is compared is the model, not the luck of the draws).

Seeds, as in the single bench: every run of an autopilot sequence trains on the scored seed
(the user re-runs the same script: memory is what differs); a search draws on the scored
seed + ``SEARCH_SEED_OFFSET`` and is scored on the scored seed; the oracle is its setup's
best grid point chosen on other seeds than it is scored on (``aggregate.oracle_of``). The
oracle's sweep runs first: the searches stop by it.

Example:
    >>> plan = MultiPlan(tasks=["digits/lr_high"], policies=["rules", "tune"], runs=2,
    ...                  seeds=1, workers=1, steps=40)
    >>> report = run_multi(plan, Path("runs/multi"))  # doctest: +SKIP
    >>> [c.needed for c in report.cells]  # doctest: +SKIP
    [[2], [None]]
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import product
from pathlib import Path
from typing import Any

from autopilot.config import Settings
from evals.bench.aggregate import multi_cells, vs_oracle
from evals.bench.jobs import (
    MEMORY_FILE,
    execute,
    policy_run,
    score_config,
    search_trials,
    tpe_sampler,
    with_memory,
)
from evals.bench.run import KEY_METRIC, grid_jobs, oracles, pool_map
from evals.errors import EvalError
from evals.results import (
    MEMORY_POLICIES,
    MULTI_POLICIES,
    MultiPolicy,
    MultiReport,
    MultiSequence,
    MultiStep,
)
from evals.results_log import git_commit
from evals.tasks import TASKS, TaskConfig
from kernel.metric_names import MetricMode

logger = logging.getLogger(__name__)

DEFAULT_TRIALS = 12
"""A search's budget: the 12 evaluations at which random search (first trial the default)
was found to tie LLM-guided search."""
TOLERANCE = 0.02
KEY_MODE: MetricMode = "min"
"""``val/loss``, as in the single bench."""
SEQUENCES_DIR = "multi"


@dataclass(frozen=True, kw_only=True)
class MultiPlan:
    """What to run: ``runs`` per autopilot sequence, ``trials`` at most per search."""

    tasks: list[str]
    policies: list[str]
    runs: int
    trials: int = DEFAULT_TRIALS
    seeds: int = 3
    workers: int = 2
    steps: int | None = None
    """Shorter runs than the tasks' (tests)."""
    tolerance: float = TOLERANCE
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise EvalError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
        bad = [p for p in self.policies if p not in MULTI_POLICIES]
        if bad:
            raise EvalError(
                f"unknown policy {bad[0]!r} for --multi; choose from {', '.join(MULTI_POLICIES)}"
            )
        if min(self.runs, self.trials, self.seeds, self.workers) < 1:
            raise EvalError("--multi, --trials, --seeds and --workers must be at least 1")
        if not 0 < self.tolerance < 1:
            raise EvalError(f"the tolerance must be within (0, 1), got {self.tolerance}")


@dataclass(frozen=True, kw_only=True)
class Sequence:
    """One sequence to run: a task, a policy, a scored seed, and the oracle it stops by."""

    task: str
    policy: MultiPolicy
    seed: int
    budget: int
    oracle: float | None
    tolerance: float
    steps: int | None = None

    @property
    def label(self) -> str:
        return f"{self.task} {self.policy} seed {self.seed} x{self.budget}"


def bad_starts(tasks: list[str]) -> list[str]:
    """The tasks among ``tasks`` that do not start from a good configuration."""
    return [t for t in tasks if not TASKS[t].healthy]


def count_jobs(plan: MultiPlan) -> int:
    """The oracle's grid runs and the sequences: what a progress bar counts."""
    grid = len(grid_jobs(plan.tasks, plan.seeds, steps=plan.steps))
    return grid + len(plan.tasks) * len(plan.policies) * plan.seeds


def run_multi(
    plan: MultiPlan, out: Path, *, on_done: Callable[[str], None] | None = None
) -> MultiReport:
    """The oracle's sweep, then every sequence; sequence directories stay under
    ``out/multi`` (each run's directory and the memory store)."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    done = on_done or (lambda _: None)
    grid = []
    train = partial(execute, out=out, settings=plan.settings)
    for job, run in pool_map(
        train, grid_jobs(plan.tasks, plan.seeds, steps=plan.steps), plan.workers
    ):
        grid.append((job, run))
        done(job.label)
    oracle_by_task = oracles(plan.tasks, grid)
    sequences = plan_sequences(plan, {t: o.final for t, o in oracle_by_task.items()})
    results = []
    for seq, result in pool_map(
        partial(run_sequence, out=out, settings=plan.settings), sequences, plan.workers
    ):
        results.append(result)
        done(seq.label)
    order = {(s.task, s.policy, s.seed): i for i, s in enumerate(sequences)}
    results.sort(key=lambda r: order[(r.task, r.policy, r.seed)])
    return MultiReport(
        tasks=plan.tasks,
        policies=plan.policies,
        seeds=plan.seeds,
        runs=plan.runs,
        trials=plan.trials,
        tolerance=plan.tolerance,
        key_metric=KEY_METRIC,
        key_mode=KEY_MODE,
        descriptions={t: TASKS[t].description for t in plan.tasks},
        oracles=oracle_by_task,
        sequences=results,
        cells=multi_cells(plan.tasks, plan.policies, results),
        wall_s=time.monotonic() - started,
        workers=plan.workers,
        git_commit=git_commit(),
        created=time.time(),
    )


def plan_sequences(plan: MultiPlan, oracle_by_task: dict[str, float | None]) -> list[Sequence]:
    """Every sequence of ``plan``, the autopilot's (the slowest) first."""
    ranked = sorted(plan.policies, key=lambda p: p not in MEMORY_POLICIES)
    return [
        Sequence(
            task=task,
            policy=policy,  # type: ignore[arg-type]
            seed=seed,
            budget=plan.runs if policy in MEMORY_POLICIES else plan.trials,
            oracle=oracle_by_task.get(task),
            tolerance=plan.tolerance,
            steps=plan.steps,
        )
        for policy, task, seed in product(ranked, plan.tasks, range(plan.seeds))
    ]


def run_sequence(seq: Sequence, *, out: Path, settings: Settings) -> MultiSequence:
    """Run ``seq`` from its first run (trial) on; a worker's unit of work. A run that raises
    ends its sequence, which keeps the runs before it and says why (``error``): one failure
    does not take a long bench down."""
    started = time.monotonic()
    task = TASKS[seq.task]
    home = out / SEQUENCES_DIR / seq.task.replace("/", "_") / f"{seq.policy}-s{seq.seed}"
    shutil.rmtree(home, ignore_errors=True)  # a fresh memory store, every time
    home.mkdir(parents=True)
    memory = seq.policy in MEMORY_POLICIES
    settings = with_memory(settings, home / MEMORY_FILE, task.name)
    steps: list[MultiStep] = []
    error = None
    try:
        if memory:
            _autopilot(seq, task, home, settings, steps)
        else:
            _search(seq, task, steps)
    except Exception as exc:
        logger.exception("%s failed after %d steps; the bench goes on", seq.label, len(steps))
        error = f"{type(exc).__name__}: {exc}"
    return MultiSequence(
        task=seq.task,
        policy=seq.policy,
        seed=seq.seed,
        budget=seq.budget,
        memory_url=settings.memory.store_url() if memory else None,
        steps=steps,
        needed=next((s.number for s in steps if s.within), None),
        runs_used=sum(s.runs for s in steps),
        wall_s=time.monotonic() - started,
        error=error,
    )


def _autopilot(
    seq: Sequence, task: TaskConfig, home: Path, settings: Settings, steps: list[MultiStep]
) -> None:
    """Every run of the sequence, one after another, given the same store."""
    store = home / MEMORY_FILE
    for number in range(1, seq.budget + 1):
        run_dir = home / f"run-{number}"
        run = policy_run(task, seq.policy, seq.seed, run_dir, settings, steps=seq.steps)  # type: ignore[arg-type]
        steps.append(
            _step(
                seq,
                number,
                run.final,
                interventions=run.interventions,
                tuner_decisions=_tuner_decisions(run_dir),
                memory_runs=stored_runs(store),
                run_dir=str(run_dir),
                wall_s=run.wall_s,
            )
        )


def _search(seq: Sequence, task: TaskConfig, steps: list[MultiStep]) -> None:
    """Trials until the best so far, scored on the scored seed, is within the tolerance."""
    sampler = _sampler(seq.policy, seq.seed, seq.budget)
    best = math.inf  # the best final so far on the search seed
    scored: float | None = None
    began = time.monotonic()
    for trial in search_trials(task, seq.seed, sampler=sampler, trials=seq.budget, steps=seq.steps):
        runs = 1
        if trial.final is not None and trial.final < best:
            best, runs = trial.final, 2
            scored = _finite(score_config(task, seq.seed, trial.params, steps=seq.steps).final)
        step = _step(
            seq,
            trial.number,
            scored,
            search_final=trial.final,
            params=trial.params,
            runs=runs,
            wall_s=time.monotonic() - began,  # the trial's run and its scoring run
        )
        began = time.monotonic()
        steps.append(step)
        if step.within:
            break


def _sampler(policy: MultiPolicy, seed: int, trials: int) -> Any:
    import optuna

    if policy == "tune":
        return tpe_sampler(seed, trials)
    return optuna.samplers.RandomSampler(seed=seed)


def _step(seq: Sequence, number: int, final: float | None, **fields: Any) -> MultiStep:
    gap = vs_oracle(final, seq.oracle, KEY_MODE)
    within = gap is not None and gap <= seq.tolerance
    return MultiStep(number=number, final=_finite(final), vs_oracle=gap, within=within, **fields)


def stored_runs(store: Path) -> int | None:
    """How many runs the memory store at ``store`` holds; ``None`` when there is no file
    (no autopilot opened it: it is not created here)."""
    from memory import open_store

    if not store.exists():
        return None
    opened = open_store(store)
    try:
        return len(opened.runs())
    finally:
        opened.close()


def _tuner_decisions(run_dir: Path) -> int:
    from autopilot.decisions import DecisionLog

    return sum(1 for view in DecisionLog(run_dir).read() if view.record.proposer == "tune")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
