"""Train one task under a real ``kernel.Kernel``, in lock-step with whoever steers it, or
live, at a fixed pace beside an autopilot in its own process.

Lock-step (the default, ``LOCKSTEP``): the kernel looks at ``commands.jsonl`` and flushes
``metrics.jsonl`` at every step, so a caller's ``on_tick(step)`` reads every metric up to
``step``, and a command it appends there is applied by ``kernel.step(step + 1)`` (its ledger
row says ``step + 1``; the update of step ``step + 2`` is the first to use it), whatever the
wall clock says: the same commands give the same curve, which is what lets the benchmark
compare policies run by run.

Live (``settings=KernelSettings()``, ``step_s > 0``): the kernel's default cadences, and each
step padded by a sleep to ``step_s`` seconds, as a real training of that pace would be seen by
a watcher; when a command lands then depends on the clock.

A task's ``LoopBug`` is the user's loop writing a knob itself, once, at the start of its step
(before the forward pass, after the kernel applied the previous step's commands).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from evals.tasks.problems import build_problem
from evals.tasks.spec import LoopBug, TaskConfig, TrainOutcome
from kernel import Kernel, KernelSettings

KEY_METRIC = "val/loss"
ADAM_BETAS = (0.9, 0.95)
"""beta2 0.95 (as in GPT-style training), not torch's 0.999: the second-moment average then
forgets in ~20 steps, not ~700, so lowering a loss weight that dominated the gradient takes
effect within the run (with 0.999, cutting ``loss.aux`` 100x at step 20 won back under half
of the gap)."""
LOCKSTEP = KernelSettings(
    poll_interval_s=0.0,  # look for commands at every step
    flush_interval_s=0.0,  # metrics reach the disk at every step
    heartbeat_interval_s=3600.0,  # nobody watches liveness here: no periodic rewrites
    grad_norm_interval_s=0.0,  # grad/norm at every step, not once a second
)


def without_reflexes(settings: KernelSettings) -> KernelSettings:
    """``settings`` with the kernel's reflexes off: a run left alone (the ``none`` policy,
    the searches, the oracle's grid). The reflexes are the autopilot's fast half; a kernel
    that predates them is returned unchanged."""
    if "reflex_action" not in {f.name for f in dataclasses.fields(settings)}:
        return settings
    return dataclasses.replace(settings, reflex_action="off")


def resolve_knobs(task: TaskConfig, params: dict[str, float] | None) -> dict[str, float]:
    """``task.start`` with ``params`` laid over it.

    Raises:
        ValueError: when ``params`` names a knob the task's setup does not have.
    """
    unknown = sorted(set(params or {}) - set(task.start))
    if unknown:
        raise ValueError(f"{task.name} has no knob {unknown}; its knobs are {sorted(task.start)}")
    return {**task.start, **(params or {})}


def train_task(
    task: TaskConfig,
    seed: int,
    run_dir: Path,
    *,
    params: dict[str, float] | None = None,
    on_tick: Callable[[int], None] | None = None,
    tick_every: int = 10,
    steps: int | None = None,
    with_bug: bool = True,
    settings: KernelSettings = LOCKSTEP,
    step_s: float = 0.0,
    on_start: Callable[[], None] | None = None,
) -> TrainOutcome:
    """Train ``task`` from its static knobs (or ``params`` over them) in ``run_dir``.

    Same ``(task, seed, params)`` and same commands: the same curve, bit for bit (on one
    CPU thread, which the caller sets), in lock-step.

    Args:
        task: what to train.
        seed: seeds the data split, the initial weights and the batches.
        run_dir: a fresh run directory; the kernel writes its files there.
        params: static knob values that replace ``task.start``'s (the tuner's, the oracle's).
        on_tick: called after ``kernel.step(step)`` at every ``tick_every``-th step.
        tick_every: steps between two calls of ``on_tick``.
        steps: a shorter run than the setup's (tests); the last step is always evaluated.
        with_bug: ``False`` trains without the task's ``LoopBug`` (the run the user meant: the
            oracle's grid).
        settings: the kernel's cadences; ``LOCKSTEP`` by default.
        step_s: each step is padded by a sleep to at least this many seconds (live pace).
        on_start: called once the kernel has published ``kernel.json``, before the first
            step (a live bench waits there for its watcher); not counted in ``wall_s``.

    Example:
        >>> import tempfile
        >>> from evals.tasks import TASKS
        >>> out = train_task(TASKS["digits/good"], 0, Path(tempfile.mkdtemp()), steps=20)
        >>> out.steps
        [20]
    """
    setup = task.setup
    knobs = resolve_knobs(task, params)
    last = setup.steps if steps is None else steps
    torch.manual_seed(seed)
    problem = build_problem(setup, seed)
    model = problem.model
    optimizer = torch.optim.Adam(
        model.parameters(), lr=knobs["lr"], betas=ADAM_BETAS, weight_decay=knobs["weight_decay"]
    )
    weights = {k.removeprefix("loss."): v for k, v in knobs.items() if k.startswith("loss.")}
    gen = torch.Generator().manual_seed(seed)
    bug = task.bug if with_bug else None
    evals: list[tuple[int, float]] = []
    started = time.perf_counter()  # after the data: its first load in a process costs ~1 s
    with Kernel(
        run_dir,
        optimizer=optimizer,
        loss_weights=weights or None,
        key_metric=KEY_METRIC,
        bounds=setup.space,
        settings=settings,
        task=task.name,  # what the autopilot's memory finds this task's earlier runs by
    ) as k:
        if on_start is not None:
            waited = time.perf_counter()
            on_start()
            started += time.perf_counter() - waited
        due = time.perf_counter()
        for step in range(1, last + 1):
            if bug is not None and step == bug.step:
                fire(bug, optimizer, weights)
            loss, metrics = problem.train_loss(gen, weights)
            optimizer.zero_grad()
            loss.backward()
            k.clip_grad_norm_(model.parameters())
            optimizer.step()
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            if step % setup.eval_every == 0 or step == last:
                scores = problem.evaluate()
                evals.append((step, scores[KEY_METRIC]))
                metrics.update(scores)
            k.log(step, metrics)
            k.step(step)
            if on_tick is not None and step % tick_every == 0:
                on_tick(step)
            if k.should_stop:
                break
            due += step_s
            if step_s > 0 and (rest := due - time.perf_counter()) > 0:
                time.sleep(rest)
    return TrainOutcome(
        final=evals[-1][1] if evals else math.nan,
        steps=[s for s, _ in evals],
        values=[v for _, v in evals],
        wall_s=time.perf_counter() - started,
    )


def fire(bug: LoopBug, optimizer: torch.optim.Optimizer, weights: dict[str, float]) -> None:
    """The user's loop writes the bug's knob itself (no command, no ledger row of its own)."""
    if bug.knob == "lr":
        for group in optimizer.param_groups:
            group["lr"] *= bug.factor
    else:
        name = bug.knob.removeprefix("loss.")
        weights[name] *= bug.factor
