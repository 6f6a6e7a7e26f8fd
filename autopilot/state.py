"""What one tick of the graph knows: ``TickState`` (checkpointed) and ``TickContext`` (not).

``TickState`` is the graph's memory between ticks. LangGraph's checkpointer serialises it,
so it holds plain JSON values only (a custom class in state breaks silently on revive): a
restarted autopilot resumes with its offsets, windows, baselines and cooldowns. What a tick
reads from the run directory is read once, in ``observe``, and travels in the state:
``kernel`` is this tick's ``kernel.json`` and ``freeze`` its freeze mode, so the guards,
the policies and the key metric all see the same snapshot.

``TickContext`` holds what the nodes share and must not be checkpointed: the run
directory, the settings, the mode, the stores, the policies, the detectors, and the LLM call
running outside the tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from autopilot.config import Mode, Settings
from autopilot.decisions import DecisionLog
from autopilot.detectors import Detector, default_detectors
from autopilot.effects import Effects
from autopilot.llm_calls import Ask, LLMCalls
from autopilot.notify import Notifier
from autopilot.policies.rules import RulePolicy
from autopilot.policies.tune import TunerHolder
from autopilot.remember import RunMemory
from autopilot.review import ReviewQueue
from autopilot.summary import Best, Early, Peak, RunSummary, Windows, summarize
from kernel import KernelState
from kernel.knobs.simple import LOSS_WEIGHT_PREFIX

if TYPE_CHECKING:
    from autopilot.policies.llm import LLMPolicy

Outcome = Literal["idle", "due", "healthy", "cooldown", "waiting for the LLM", "diagnosed"]
"""How far the last tick went: ``idle`` (too few new steps), ``due`` (observed, going on),
``healthy``, ``cooldown`` (found only what was decided recently), ``waiting for the LLM``
(between LLM calls), ``diagnosed`` (a decision was made)."""


class TickState(TypedDict, total=False):
    """What the graph remembers between ticks (plain JSON values only); nodes return the
    keys they change."""

    metrics_offset: int
    metrics_inode: int | None
    """The inode of the file ``metrics_offset`` is in: a rotated ``metrics.jsonl`` is
    finished from the offset before the new one is read."""
    ledger_offset: int
    segment: int | None
    """The run segment the windows belong to (``None`` before the first record)."""
    step: int
    due_step: int
    windows: Windows
    """Per metric ``[steps, values]``: columnar, so a checkpoint holds two flat lists per
    metric rather than a list per point, which made unpacking and converting them slow."""
    best: Best
    early: Early
    """Per metric its first finite values over the segment (``autopilot.summary.Early``)."""
    peak: Peak
    """Per metric its largest value over the segment (``autopilot.summary.Peak``)."""
    episodes: dict[str, dict[str, Any]]
    """The open episode of each diagnosis kind (``autopilot.episodes.Episode`` fields)."""
    key_metric: str
    key_mode: Literal["min", "max"]
    key_unlogged: str | None
    """A declared key metric that is not logged (``key_metric`` is then the fallback)."""
    kernel: dict[str, Any] | None
    """``kernel.json`` as ``observe`` read it this tick (``KernelState`` fields)."""
    freeze: str
    """The freeze mode this tick: the kernel's, or ``freeze.json`` when it is newer."""
    history: list[dict[str, Any]]
    """This segment's applied ``set`` rows (ledger rows, any source) as far back as the
    guards look: the cooldowns and the cumulative guard read them."""
    diagnoses: list[dict[str, Any]]
    """The diagnoses this tick decides on: the fresh ones, or those an LLM answer is for."""
    present: list[dict[str, Any]]
    """Every diagnosis found this tick, fresh or recently decided: a late LLM answer is
    judged while a diagnosis of its kind is present, and dropped as stale otherwise."""
    proposal: dict[str, Any] | None
    fallback_reason: str | None
    urgent: bool
    """This tick's urgent diagnosis goes to the rules at once (``autopilot.llm_calls``)."""
    llm_spent: dict[str, Any] | None
    """What a failed LLM call cost before the rules took over: ``Usage.model_dump(mode="json")``,
    validated again by the ``rules`` node that reads it."""
    verdicts: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    """The latest applied knob changes (ledger rows, any source), oldest first."""
    baselines: list[dict[str, Any]]
    unremembered: list[dict[str, Any]]
    """Applied ledger rows (knob changes, rewinds) not yet written to memory: ``observe``
    collects them, ``evaluate`` writes them."""
    recalled_at: int | None
    """The step memory's start plan was last looked at (``autopilot.remember``): again
    after a knob's cooldown, for the part of the plan that comes due later or was cut
    short by a guard."""
    rewound: list[int] | None
    """The latest rewind's span ``[snapshot_step, rewind_step]`` (``observe.rewound_span``):
    metric records of those steps arriving later belong to the abandoned trajectory."""
    reflexes: list[dict[str, Any]]
    """The kernel's latest reflex rewinds (step, snapshot_step, metric, cause, reason)."""
    decided: dict[str, int]
    """Per diagnosis kind, the step it was last decided at."""
    llm_next_step: int
    llm_ask: Ask | None
    """The LLM call in flight outside the tick (``autopilot.llm_calls``), if any; a
    restarted autopilot finds it held by no thread and records it as lost."""
    llm_call: dict[str, Any] | None
    """What became of the call this tick's decision answers (``LLMCall`` fields)."""
    past: list[dict[str, Any]]
    """Recent decisions as the prompt reads them (``PastDecision`` fields)."""
    outcome: Outcome
    last_decision_id: str | None
    tune: dict[str, Any]
    """The online tuner's segments (``autopilot.tune_node``): ``open`` (the trial being
    measured: number, study, run id, asked step, deadline, factors; ``None`` when none) and
    ``next_step`` (when the next segment may open)."""


def tick_kernel(state: TickState) -> KernelState | None:
    """``kernel.json`` as this tick's ``observe`` read it (``None``: no kernel yet)."""
    raw = state.get("kernel")
    return KernelState.model_validate(raw) if raw else None


class SummaryCache:
    """The summary of a state's windows. It is derived data, so it is kept here rather than
    in the checkpointed state, and recomputed after a restart."""

    def __init__(self, min_points: int) -> None:
        self._min_points = min_points
        self._cached: tuple[tuple[int, int], RunSummary] | None = None

    def of(self, state: TickState) -> RunSummary:
        key = (state["step"], state["metrics_offset"])
        if self._cached is None or self._cached[0] != key:
            summary = summarize(
                state["windows"],
                state["best"],
                step=state["step"],
                key_metric=state["key_metric"],
                key_mode=state["key_mode"],
                min_points=self._min_points,
                early=state.get("early"),
                peak=state.get("peak"),
                max_steps=_max_steps(state),
                loss_weights=_loss_weights(state),
            )
            self._cached = (key, summary)
        return self._cached[1]


def _loss_weights(state: TickState) -> dict[str, float]:
    """Per loss term its weight, from the ``loss.<term>`` knobs ``kernel.json`` lists."""
    knobs = (state.get("kernel") or {}).get("knobs") or []
    return {
        str(k["name"]).removeprefix(LOSS_WEIGHT_PREFIX): float(k["value"])
        for k in knobs
        if str(k.get("name", "")).startswith(LOSS_WEIGHT_PREFIX)
        and isinstance(k.get("value"), int | float)
        and not isinstance(k.get("value"), bool)
    }


def _max_steps(state: TickState) -> int | None:
    kernel = state.get("kernel") or {}
    value = kernel.get("max_steps")
    return value if isinstance(value, int) and value > 0 else None


class LLMHolder:
    """The LLM policy, built on first use (importing it and ``openai`` takes ~0.5 s)."""

    def __init__(self, settings: Settings, run_dir: Path, policy: LLMPolicy | None) -> None:
        self._settings, self._run_dir, self._policy = settings, run_dir, policy

    def get(self) -> LLMPolicy:
        if self._policy is None:
            from autopilot.policies.llm import LLMPolicy

            self._policy = LLMPolicy(self._settings, self._run_dir)
        return self._policy

    def warm_up(self) -> None:
        """Load the policy and the ``openai`` client now, not in the first urgent tick."""
        self.get()
        import openai  # noqa: F401


@dataclass(frozen=True, kw_only=True)
class TickContext:
    """The tick's dependencies, bound to one run directory, settings and mode.

    Build it with ``TickContext.create``; ``autopilot.graph.build_graph`` binds it to the
    nodes.
    """

    run_dir: Path
    settings: Settings
    mode: Mode
    log: DecisionLog
    queue: ReviewQueue
    effects: Effects
    rules: RulePolicy
    llm: LLMHolder
    llm_calls: LLMCalls
    """The LLM call outside the tick: one in flight at a time, never waited for."""
    detectors: tuple[Detector, ...]
    memory: RunMemory
    """The memory store as this run uses it (``autopilot.remember``)."""
    summaries: SummaryCache = field(repr=False)
    tuner: TunerHolder = field(repr=False)
    """The online tuner (``settings.tune``), its study opened on first use."""
    notifier: Notifier = field(repr=False)
    """Posts to ``[notify] webhook_url`` (``autopilot.notify``); a no-op without one."""

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        settings: Settings,
        mode: Mode,
        *,
        llm_policy: LLMPolicy | None = None,
        detectors: Sequence[Detector] | None = None,
    ) -> TickContext:
        """The context of ``run_dir``; ``detectors`` replace the ones built from
        ``settings.detectors`` (``None``: those defaults)."""
        run_dir = Path(run_dir)
        log = DecisionLog(run_dir)
        chosen = default_detectors(settings.detectors) if detectors is None else detectors
        holder = LLMHolder(settings, run_dir, llm_policy)
        return cls(
            run_dir=run_dir,
            settings=settings,
            mode=mode,
            log=log,
            queue=ReviewQueue(run_dir, settings),
            effects=Effects(run_dir, settings, mode, log),
            rules=RulePolicy(rollback_window_steps=settings.evaluate.horizon_steps),
            llm=holder,
            llm_calls=LLMCalls(lambda policy_ctx: holder.get().propose(policy_ctx)),
            detectors=tuple(chosen),
            memory=RunMemory(run_dir, settings),
            summaries=SummaryCache(settings.detectors.min_points),
            tuner=TunerHolder(settings, run_dir),
            notifier=Notifier(settings.notify, run_dir),
        )

    def summary(self, state: TickState) -> RunSummary:
        """The summary of ``state``'s windows (cached per step and offset)."""
        return self.summaries.of(state)


__all__ = ["Outcome", "SummaryCache", "TickContext", "TickState", "tick_kernel"]
