"""The units of work of the closed-loop bench; each is real training, in a worker process.

- ``policy_run``: one task under ``none`` (its static configuration), ``rules`` or ``ai`` (the
  autopilot in ``auto`` / ``ai_auto`` mode). Lock-step (the default), the training loop
  ticks the autopilot, so a result does not depend on how fast the machine is; live, the
  autopilot is a real ``autopilot watch`` process (``evals.bench.live``) beside a training
  paced at ``step_ms`` a step under the kernel's default cadences.
- ``tune_run``: a plain Optuna TPE search over the task's bounded knobs across repeated runs
  (its starting configuration is the first trial); the best trial is the result.
- ``grid_run``: one point of the oracle's grid sweep.

Only the autopilot's runs have the kernel's reflexes on (its fast half): ``none``, the
searches and the grid run with them off (``without_reflexes``), so ``none`` is the run left
alone. A task's loop bug fires in every run but the grid's: the oracle is the run the user
meant, ``tune`` searches the user's script as it is.

A job returns plain pydantic results and never raises for a training that went wrong: a
diverged run is a result (``final=None, diverged=True``).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autopilot.config import Settings
from autopilot.tokens import Usage
from evals.results import BenchMode, BenchPolicy, BenchRun, Intervention
from evals.tasks import TASKS, TaskConfig, TrainOutcome, train_task
from evals.tasks.train import LOCKSTEP, without_reflexes
from kernel import KernelSettings

logger = logging.getLogger(__name__)

AUTOPILOT_MODES: dict[str, str] = {"rules": "auto", "ai": "ai_auto", "online": "auto"}
"""The autopilot's mode per policy; ``online`` is ``auto`` with the online tuner on."""
MEMORY_FILE = "memory.sqlite"
ALONE = without_reflexes(LOCKSTEP)
"""The kernel's settings of a run no autopilot steers."""
DEFAULT_STEP_MS = 10.0


@dataclass(frozen=True, kw_only=True)
class Job:
    """One unit of work: what to train and where its run directories go."""

    kind: Literal["policy", "tune", "grid"]
    task: str
    seed: int
    policy: BenchPolicy = "none"
    params: tuple[tuple[str, float], ...] = ()
    """``grid``: the grid point."""
    trials: int = 0
    """``tune``: how many training runs the search may use."""
    steps: int | None = None
    """Shorter runs than the task's (tests)."""
    mode: BenchMode = "lockstep"
    """``policy`` under an autopilot: how it runs beside the training."""
    step_ms: float = DEFAULT_STEP_MS
    """``live``: the training's pace."""

    @property
    def label(self) -> str:
        what = self.policy if self.kind == "policy" else self.kind
        return f"{self.task} {what} seed {self.seed}"


def worker_init() -> None:
    """Each worker trains on one thread: two workers on two cores, no oversubscription."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def execute(job: Job, out: Path, settings: Settings) -> BenchRun:
    """Run ``job``; policy runs keep their run directory under ``out`` for inspection."""
    task = TASKS[job.task]
    if job.kind == "policy":
        home = out / "runs" / job.task.replace("/", "_") / f"{job.policy}-s{job.seed}"
        shutil.rmtree(home, ignore_errors=True)
        run_dir = home / "run"
        run_dir.mkdir(parents=True)
        return policy_run(
            task,
            job.policy,
            job.seed,
            run_dir,
            # one run, nothing remembered: a fresh store, not the user's
            with_memory(settings, home / MEMORY_FILE, task.name),
            steps=job.steps,
            mode=job.mode,
            step_ms=job.step_ms,
        )
    if job.kind == "tune":
        return tune_run(task, job.seed, trials=job.trials, steps=job.steps)
    return grid_run(task, dict(job.params), job.seed, steps=job.steps)


def policy_run(
    task: TaskConfig,
    policy: BenchPolicy,
    seed: int,
    run_dir: Path,
    settings: Settings,
    *,
    steps: int | None = None,
    mode: BenchMode = "lockstep",
    step_ms: float = DEFAULT_STEP_MS,
) -> BenchRun:
    """Train ``task`` from its starting configuration, under the autopilot unless ``none``:
    ticked by the loop (``lockstep``) or as its own process (``live``)."""
    started = time.monotonic()
    if policy == "none":
        outcome = train_task(task, seed, run_dir, steps=steps, settings=ALONE)
        return _result(task, policy, seed, outcome, started, params=task.start)
    settings = policy_settings(policy, settings)
    if mode == "live":
        outcome = _live(task, policy, seed, run_dir, settings, steps=steps, step_ms=step_ms)
    else:
        outcome = _lockstep(task, policy, seed, run_dir, settings, steps=steps)
    usage, fallbacks = _spend(run_dir)
    interventions = _interventions(run_dir)
    return _result(
        task,
        policy,
        seed,
        outcome,
        started,
        params=task.start,
        interventions=interventions,
        usage=usage,
        fallbacks=fallbacks,
        mode=mode,
        reaction_steps=_reaction(task, interventions),
    )


def _lockstep(
    task: TaskConfig,
    policy: BenchPolicy,
    seed: int,
    run_dir: Path,
    settings: Settings,
    *,
    steps: int | None,
) -> TrainOutcome:
    from autopilot.watch import Autopilot

    pilot = Autopilot(run_dir, mode=AUTOPILOT_MODES[policy], settings=settings)
    ticker = _Ticker(pilot)
    try:
        return train_task(
            task,
            seed,
            run_dir,
            steps=steps,
            on_tick=ticker,
            tick_every=settings.cadence.tick_every_steps,
        )
    finally:
        pilot.close()


def _live(
    task: TaskConfig,
    policy: BenchPolicy,
    seed: int,
    run_dir: Path,
    settings: Settings,
    *,
    steps: int | None,
    step_ms: float,
) -> TrainOutcome:
    """The watcher is started first (its imports overlap the model's build) and the first
    step waits until it watches; it is stopped once the kernel has closed."""
    from evals.bench.live import Watcher

    with Watcher(run_dir, mode=AUTOPILOT_MODES[policy], settings=settings) as watcher:
        return train_task(
            task,
            seed,
            run_dir,
            steps=steps,
            settings=KernelSettings(),
            step_s=step_ms / 1000,
            on_start=watcher.wait_until_watching,
        )


def policy_settings(policy: BenchPolicy, settings: Settings) -> Settings:
    """The settings an autopilot policy runs with: ``online`` turns the online tuner on."""
    if policy != "online":
        return settings
    return settings.model_copy(update={"tune": settings.tune.model_copy(update={"enabled": True})})


def with_memory(settings: Settings, store: Path, task: str) -> Settings:
    """``settings`` with the memory store at ``store`` (SQLite, created on first use) and
    ``task`` as the task's name (the kernel publishes the same name)."""
    memory = settings.memory.model_copy(
        update={"enabled": True, "url": f"sqlite:///{store.resolve()}", "task": task}
    )
    return settings.model_copy(update={"memory": memory})


class _Ticker:
    """Ticks the autopilot from the training loop; a failing tick is logged, never raised
    (as in ``Autopilot.run``: the autopilot must not take the training down)."""

    def __init__(self, pilot: Any) -> None:
        self.pilot = pilot
        self.failures = 0

    def __call__(self, step: int) -> None:
        try:
            self.pilot.tick()
            # lock-step: a call started by this tick is answered before the next one (live,
            # it runs beside training), so a bench run is the same on every run
            self.pilot.context.llm_calls.wait(self.pilot.settings.llm.timeout_s + 5)
        except Exception:
            self.failures += 1
            logger.exception("autopilot tick at step %d failed; training continues", step)


SEARCH_SEED_OFFSET = 1000
"""``tune`` searches on seed ``s + SEARCH_SEED_OFFSET`` and is scored by one more run of its
chosen configuration on seed ``s``, the seed the other policies are scored on: the best of
several draws on the scored seed would count its luck as skill."""


def tune_run(task: TaskConfig, seed: int, *, trials: int, steps: int | None = None) -> BenchRun:
    """Optuna TPE over the task's search space: ``trials`` full runs on a search seed (the
    first half of them, at most 10, are TPE's random start-up), then the best configuration
    trained once on ``seed`` and scored there (``runs_used = trials + 1``)."""
    started = time.monotonic()
    sampler = tpe_sampler(seed, trials)
    done = list(search_trials(task, seed, sampler=sampler, trials=trials, steps=steps))
    finite = [t for t in done if t.final is not None]
    chosen = min(finite, key=lambda t: _or_inf(t.final)).params if finite else {}
    scored = score_config(task, seed, chosen, steps=steps)
    return _result(task, "tune", seed, scored, started, params=chosen, runs_used=trials + 1)


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One run of a search, on the search seed: its configuration and final key metric
    (``None``: not finite, told to the study as failed)."""

    number: int
    """1 for the starting configuration."""
    params: dict[str, float]
    final: float | None


def tpe_sampler(seed: int, trials: int) -> Any:
    """The ``tune`` policy's sampler: TPE whose random start-up is ``startup_trials``."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials))


def search_trials(
    task: TaskConfig, seed: int, *, sampler: Any, trials: int, steps: int | None = None
) -> Iterator[Trial]:
    """Up to ``trials`` full runs of the user's script (bug included, reflexes off) on seed
    ``seed + SEARCH_SEED_OFFSET``, each configuration drawn by ``sampler`` over the task's
    log-uniform space, the starting configuration first; yields each trial once told. A
    caller may stop early (``multi``: once the best so far scores within reach)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = task.setup.space
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial({k: min(max(v, space[k][0]), space[k][1]) for k, v in _start(task)})
    search_seed = seed + SEARCH_SEED_OFFSET
    for number in range(1, trials + 1):
        trial = study.ask()
        params = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in space.items()}
        with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
            outcome = train_task(
                task, search_seed, Path(tmp), params=params, steps=steps, settings=ALONE
            )
        if math.isfinite(outcome.final):
            study.tell(trial, outcome.final)
            yield Trial(number=number, params=params, final=outcome.final)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            yield Trial(number=number, params=params, final=None)


def score_config(
    task: TaskConfig, seed: int, params: dict[str, float], *, steps: int | None = None
) -> TrainOutcome:
    """A search's chosen configuration trained once on the scored ``seed`` (the start's
    when ``params`` is empty), reflexes off, bug included."""
    with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
        return train_task(task, seed, Path(tmp), params=params or None, steps=steps, settings=ALONE)


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def startup_trials(trials: int) -> int:
    """TPE's random start-up trials: half of ``trials``, between 1 and Optuna's default 10,
    so a short search is TPE for part of it, not random search throughout.

    Example:
        >>> startup_trials(6), startup_trials(40)
        (3, 10)
    """
    return max(1, min(10, trials // 2))


def _start(task: TaskConfig) -> list[tuple[str, float]]:
    return [(k, v) for k, v in task.start.items() if k in task.setup.space]


def grid_run(
    task: TaskConfig, params: dict[str, float], seed: int, *, steps: int | None = None
) -> BenchRun:
    """One static configuration of the oracle's sweep, without the task's loop bug."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grid-") as tmp:
        outcome = train_task(
            task, seed, Path(tmp), params=params, steps=steps, settings=ALONE, with_bug=False
        )
    return _result(task, "none", seed, outcome, started, params={**task.start, **params})


def _result(
    task: TaskConfig,
    policy: BenchPolicy,
    seed: int,
    outcome: TrainOutcome,
    started: float,
    *,
    params: dict[str, float],
    interventions: list[Intervention] | None = None,
    usage: Usage | None = None,
    fallbacks: int = 0,
    runs_used: int = 1,
    mode: BenchMode | None = None,
    reaction_steps: int | None = None,
) -> BenchRun:
    finite = math.isfinite(outcome.final)
    return BenchRun(
        task=task.name,
        policy=policy,
        seed=seed,
        final=outcome.final if finite else None,
        diverged=not finite,
        interventions=interventions or [],
        usage=usage or Usage(),
        fallbacks=fallbacks,
        wall_s=time.monotonic() - started,
        runs_used=runs_used,
        params=dict(params),
        curve=(list(outcome.steps), [v if math.isfinite(v) else None for v in outcome.values]),
        mode=mode,
        bug_step=task.bug.step if task.bug is not None else None,
        reaction_steps=reaction_steps,
    )


REFLEX_SOURCE = "kernel"
"""The ledger source of a change the kernel made by itself (a reflex's rewind)."""


def _interventions(run_dir: Path) -> list[Intervention]:
    """Applied knob changes and rewinds from the autopilot, and the kernel reflex's rewinds,
    from the run's ledger."""
    from autopilot.guard_context import by_autopilot
    from kernel import read_ledger

    changes = []
    for row in read_ledger(run_dir):
        if row.decision != "applied":
            continue
        rewind = row.op == "rewind" and (by_autopilot(row) or row.source == REFLEX_SOURCE)
        if rewind or (row.knob and by_autopilot(row)):
            changes.append(
                Intervention(
                    step=row.step or 0,
                    knob=row.knob or "",
                    op="rewind" if rewind else "set",
                    before=row.before,
                    after=row.after,
                    source=row.source or "",
                )
            )
    return changes


def _reaction(task: TaskConfig, changes: list[Intervention]) -> int | None:
    """Steps from the task's loop bug to the first change applied at or after it."""
    if task.bug is None:
        return None
    after = [c.step for c in changes if c.step >= task.bug.step]
    return min(after) - task.bug.step if after else None


def _spend(run_dir: Path) -> tuple[Usage, int]:
    """What the LLM consumed and cost, and the decisions that fell back to the rules because
    the LLM failed (an urgent diagnosis answered by the rules at once is no failure)."""
    from autopilot.decisions import DecisionLog

    records = [view.record for view in DecisionLog(run_dir).read()]
    usage = sum((r.usage for r in records), Usage())
    return usage, sum(1 for r in records if r.fallback_reason and not r.urgent)
