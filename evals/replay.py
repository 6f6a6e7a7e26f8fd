"""Replay recorded runs through the autopilot graph, as if live, in shadow mode.

Each run is copied record by record into a scratch run directory. Whenever as many new steps
have arrived as the autopilot waits for (``cadence.tick_every_steps``), the real tick graph
runs over them: observe, summarize, evaluate, diagnose, the policy, the guards, route. The
mode is ``suggest`` for the ``rules`` policy and ``ai_suggest`` for ``ai``, so a proposal
goes to the scratch run's review queue, where no one approves it: nothing is applied, and the
run unfolds exactly as it was recorded.

The scratch run has a *shadow* ``kernel.json`` with the one knob a recorded run shows, the
learning rate (when ``lr`` was logged), so the guards can judge proposals as they would live,
and the run's horizon (``max_steps`` from its ``run.json``, when known), which a live Hugging
Face or Lightning run publishes and the detectors scale their patience to.

An alarm is a diagnosis the policy acted on: the detectors' for ``rules`` (and for ``ai``
when it fell back to the rules), the analyst's for ``ai``. An analyst that answers
``healthy`` overrules the detectors, and no alarm is raised.

Example:
    >>> report, alarms = replay([load_run("evals/corpus/digits_plateau")],  # doctest: +SKIP
    ...                         policy="rules", settings=Settings(), tolerance=300,
    ...                         tolerance_evals=3)
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from autopilot.config import Mode, Settings
from autopilot.context import key_metric_of
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.graph import build_graph
from autopilot.state import TickContext, TickState
from autopilot.tokens import Usage
from evals.errors import EvalError
from evals.results import Alarm, ReplayPolicy, ReplayReport, ReplayRun
from evals.results_log import git_commit
from evals.runs import RecordedRun
from evals.scoring import DEFAULT_TOLERANCE, DEFAULT_TOLERANCE_EVALS, count_episodes, score_all
from kernel import KernelState, KnobSpec, MetricRecord
from kernel.knobs import DEFAULT_BOUNDS
from kernel.metric_names import DEFAULT_KEY_METRIC
from kernel.metrics import METRICS_FILE
from kernel.state import write_kernel_state

POLICY_MODES: dict[ReplayPolicy, Mode] = {"rules": "suggest", "ai": "ai_suggest"}


def replay(
    runs: list[RecordedRun],
    *,
    policy: ReplayPolicy,
    settings: Settings,
    tolerance: int = DEFAULT_TOLERANCE,
    tolerance_evals: int | None = DEFAULT_TOLERANCE_EVALS,
    key_metric: str | None = None,
    llm_policy: Any = None,
    on_run: Callable[[ReplayRun], None] | None = None,
) -> tuple[ReplayReport, list[Alarm]]:
    """Replay ``runs`` under ``policy`` and score the alarms against their labels.

    Args:
        runs: the recorded runs (``evals.runs.load_run``).
        policy: ``rules``, or ``ai`` (the LLM agents of ``settings.llm``).
        settings: the autopilot's settings (cadence, detectors, budget, provider).
        tolerance: steps after onset within which a first alarm counts as a detection.
        tolerance_evals: evaluations of the key metric after onset within which it counts
            too (whichever window ends later); ``None`` for the step window alone.
        key_metric: the metric to judge by; inferred per run when ``None`` (``val/loss``,
            else another validation loss, else the first loss).
        llm_policy: a ready LLM policy (tests); built from ``settings`` otherwise.
        on_run: called after each run (progress).

    Raises:
        EvalError: ``ai`` without a key for its provider; a negative tolerance.
    """
    for name, value in (("tolerance", tolerance), ("tolerance_evals", tolerance_evals)):
        if value is not None and value < 0:
            raise EvalError(f"{name} must be >= 0, got {value}")
    if policy == "ai" and settings.api_key() is None:
        raise EvalError(
            f"policy ai needs an LLM provider: set ${settings.llm.api_key_env} (any value "
            "for a local provider without keys) and llm.base_url in --config; or use --policy rules"
        )
    started = time.monotonic()
    results: list[ReplayRun] = []
    alarms: list[Alarm] = []
    prompt_version = None
    for run in runs:
        result, run_alarms, version = replay_run(
            run, policy=policy, settings=settings, key_metric=key_metric, llm_policy=llm_policy
        )
        results.append(result)
        alarms += run_alarms
        prompt_version = prompt_version or version
        if on_run is not None:
            on_run(result)
    scores, healthy = score_all(
        results, alarms, tolerance=tolerance, tolerance_evals=tolerance_evals
    )
    report = ReplayReport(
        policy=policy,
        tolerance_steps=tolerance,
        tolerance_evals=tolerance_evals,
        prompt_version=prompt_version,
        model=settings.llm.model if policy == "ai" else None,
        runs=results,
        scores=scores,
        healthy_runs=healthy.runs,
        healthy_runs_alarmed=healthy.runs_alarmed,
        healthy_runs_alarmed_fraction=healthy.runs_alarmed_fraction,
        healthy_steps=healthy.steps,
        healthy_alarms=healthy.alarms,
        false_alarms_per_1k_healthy_steps=healthy.per_1k_steps,
        tokens_per_run=_mean([r.usage.tokens_in + r.usage.tokens_out for r in results]),
        usd_per_run=_mean([r.usage.cost_usd for r in results]),
        wall_s=time.monotonic() - started,
        git_commit=git_commit(),
        created=time.time(),
    )
    return report, alarms


def replay_run(
    run: RecordedRun,
    *,
    policy: ReplayPolicy,
    settings: Settings,
    key_metric: str | None = None,
    llm_policy: Any = None,
    scratch_root: Path | None = None,
) -> tuple[ReplayRun, list[Alarm], str | None]:
    """Replay one run in a scratch directory; its result, its alarms, the prompt version.

    The scratch run directory is ``scratch_root/<run name>`` (which must not exist yet) and
    is kept when ``scratch_root`` is given, to read its decisions, review queue and
    ``kernel.json``; else it lives in a temporary directory, deleted after.
    """
    started = time.monotonic()
    # the latest segment, replayed as the first run of its scratch directory
    records = [r.model_copy(update={"segment": 0}) if r.segment else r for r in run.records()]
    key = key_metric or _key_metric(run, settings, records)
    run_settings = settings.model_copy(
        update={"detectors": settings.detectors.model_copy(update={"key_metric": key})}
    )
    mode = POLICY_MODES[policy]
    # a directory of its own, its memory store in it (``_feed``)
    with _scratch(scratch_root) as scratch:
        shadow = scratch / run.name
        shadow.mkdir()
        ticks = _feed(records, shadow, run_settings, mode, llm_policy, max_steps=run.info.max_steps)
        decisions = [v.record for v in DecisionLog(shadow).read()]
    alarms = [a for record in decisions for a in _alarms(run.name, record)]
    key_steps = sorted({r.step for r in records if key in r.metrics})
    result = ReplayRun(
        run=run.name,
        path=str(run.path),
        key_metric=key,
        steps=len(records),
        last_step=records[-1].step if records else 0,
        events=[(e.kind, e.onset_step) for e in run.labels.events],
        alarms=len(alarms),
        episodes=count_episodes(alarms),
        evaluations=len(key_steps),
        key_steps=key_steps,
        ticks=ticks,
        usage=sum((d.usage for d in decisions), Usage()),
        llm_calls=sum(1 for d in decisions if d.proposer == "ai"),
        fallbacks=sum(1 for d in decisions if d.fallback_reason and not d.urgent),
        wall_s=time.monotonic() - started,
    )
    version = next((d.prompt_version for d in decisions if d.proposer == "ai"), None)
    return result, alarms, version


def _key_metric(run: RecordedRun, settings: Settings, records: list[MetricRecord]) -> str:
    """The key metric the live autopilot settles on for the whole run (its own rule, past
    its grace period); ``val/loss`` when it would find none."""
    last = max(records[-1].step if records else 0, settings.detectors.key_metric_grace_steps)
    key = key_metric_of(None, settings, run.metric_names(), last)
    return key.name if key is not None else DEFAULT_KEY_METRIC


@contextlib.contextmanager
def _scratch(root: Path | None) -> Iterator[Path]:
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="replay-") as scratch:
        yield Path(scratch)


def _feed(
    records: list[MetricRecord],
    run_dir: Path,
    settings: Settings,
    mode: Mode,
    llm_policy: Any,
    *,
    max_steps: int | None = None,
) -> int:
    """Append ``records`` to ``run_dir`` one by one, ticking the graph when one is due."""
    lr = _ShadowKernel(run_dir, max_steps=max_steps)
    # a replay is scored on its own: a scratch memory store, never the user's (whose earlier
    # runs would steer it, and which it would fill with shadow runs)
    scratch_store = f"sqlite:///{run_dir / 'autopilot' / 'memory.sqlite'}"
    memory = settings.memory.model_copy(update={"url": scratch_store})
    settings = settings.model_copy(update={"memory": memory})
    ctx = TickContext.create(run_dir, settings, mode, llm_policy=llm_policy)
    graph = build_graph(ctx)
    every = settings.cadence.tick_every_steps
    state: TickState = {}
    ticks = 0
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as metrics:
        for record in records:
            metrics.write(record.to_line())
            lr.follow(record)
            if record.step - state.get("due_step", -(10**9)) < every:
                continue
            metrics.flush()
            lr.publish(record.step)
            state = cast(TickState, graph.invoke(state))
            # in lock-step, a call started by this tick is answered before the next one
            # (live, it runs beside training): the replay is the same on every run
            ctx.llm_calls.wait(settings.llm.timeout_s + 5)
            ticks += 1
    return ticks


class _ShadowKernel:
    """A ``kernel.json`` for a replayed run: its learning rate as recorded, never changed by
    the autopilot (nothing is applied in shadow mode), and its horizon when known."""

    def __init__(self, run_dir: Path, *, max_steps: int | None = None) -> None:
        self.run_dir = run_dir
        self.max_steps = max_steps
        self.lr: float | None = None
        self._started = time.time()
        self._published_lr: float | None = None
        self._write(step=0)

    def follow(self, record: MetricRecord) -> None:
        value = record.metrics.get("lr")
        if isinstance(value, float) and value > 0:
            self.lr = value

    def publish(self, step: int) -> None:
        """Rewrite ``kernel.json`` when the learning rate moved since the last time."""
        if self._published_lr != self.lr:
            self._write(step)

    def _write(self, step: int) -> None:
        self._published_lr = self.lr
        knobs = []
        if self.lr is not None:
            lo, hi, scale = DEFAULT_BOUNDS["lr"]
            knobs.append(
                KnobSpec(name="lr", kind="float", lo=lo, hi=hi, scale=scale, value=self.lr)
            )
        now = time.time()
        state = KernelState(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self._started,
            heartbeat=now,
            last_step=step,
            last_step_time=now,
            max_steps=self.max_steps,
            knobs=knobs,
        )
        write_kernel_state(self.run_dir, state)


def _alarms(run: str, record: DecisionRecord) -> list[Alarm]:
    """The alarms of one decision: the analyst's kind when the LLM answered, else the
    detectors' diagnoses the rules acted on."""
    proposal = record.proposal
    actions = [a.describe() for a in proposal.actions] if proposal else []
    proposer = proposal.proposer if proposal else None
    if proposal is not None and proposal.proposer == "ai":
        if proposal.kind in (None, "healthy"):
            return []
        first = record.diagnoses[0] if record.diagnoses else None
        evidence = dict(first.evidence) if first else {}
        evidence["analyst"] = proposal.reasoning[:500]
        return [
            Alarm(
                run=run,
                step=record.step,
                kind=proposal.kind,
                metric=first.metric if first else "",
                message=proposal.diagnosis[:500],
                evidence=evidence,
                proposer="ai",
                proposal=actions,
                episode=first.episode if first else None,
                onset_step=first.onset_step if first else None,
            )
        ]
    return [
        Alarm(
            run=run,
            step=record.step,
            kind=d.kind,
            metric=d.metric,
            message=d.message,
            evidence=d.evidence,
            proposer=proposer,
            proposal=actions if i == 0 else [],
            episode=d.episode,
            onset_step=d.onset_step,
        )
        for i, d in enumerate(record.diagnoses)
    ]


def _mean(values: list[float] | list[int]) -> float:
    return float(statistics.fmean(values)) if values else 0.0
