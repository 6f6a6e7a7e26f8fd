"""What the harness measures, as typed results: replay scores and closed-loop bench figures.

These models are the harness's output contract. ``report.py`` renders them as markdown and
PNG plots; ``results_log.py`` appends their headline figures, with the git commit, to a
results log so runs can be compared over time. Every figure here comes from a real replay or
a real training run; nothing is filled in by the harness.

Non-finite numbers (a run that diverged to NaN) are kept as ``None`` in the JSON, with the
reason beside them where it matters (``BenchRun.diverged``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopilot.diagnoses import Evidence
from autopilot.tokens import Usage
from kernel import KnobValue

LabelKind = Literal["plateau", "divergence", "overfitting"]
LABEL_KINDS: tuple[LabelKind, ...] = ("plateau", "divergence", "overfitting")
ReplayPolicy = Literal["rules", "ai"]
BenchPolicy = Literal["none", "rules", "ai", "tune", "online"]
BENCH_POLICIES: tuple[BenchPolicy, ...] = ("none", "rules", "ai", "tune", "online")
"""``online``: the rules with the online tuner on (``settings.tune.enabled``)."""
BenchMode = Literal["lockstep", "live"]
"""How the autopilot ran beside a bench's training: ticked by the loop at every
``tick_every_steps`` (``lockstep``), or as its own ``autopilot watch`` process beside a paced
training with the kernel's default cadences (``live``)."""


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- replay ----------------------------------------------------------------------------------


class Alarm(_Result):
    """One diagnosis the autopilot raised while a recorded run was replayed (a line of
    ``diagnoses.jsonl``)."""

    run: str
    step: int
    kind: str
    """A detector kind (``oscillation`` too, which no label names), or the analyst's kind."""
    metric: str
    message: str
    evidence: Evidence = Field(default_factory=dict)
    proposer: str | None = None
    """Who decided what to do about it: ``rules``, or ``ai`` when the LLM answered."""
    proposal: list[str] = Field(default_factory=list)
    """What it would have changed (``lr x0.1``); in shadow mode nothing was applied."""
    episode: str | None = None
    """The episode of the diagnosis it came from (``Diagnosis.episode``): the repeated alarms
    of one problem share it; ``None`` when the graph gave none."""
    onset_step: int | None = None
    """The step that episode opened (``Diagnosis.onset_step``)."""


class ReplayRun(_Result):
    """One replayed run: its labels, its alarms' count and what the LLM cost on it."""

    run: str
    path: str
    key_metric: str
    """The metric the run was judged by (``--key-metric``, else inferred)."""
    steps: int
    """Number of metric records (the run's length in logged steps)."""
    last_step: int
    events: list[tuple[LabelKind, int]] = Field(default_factory=list)
    """The labelled ``(kind, onset_step)`` pairs; empty for a healthy run."""
    alarms: int
    episodes: int = 0
    """Distinct episodes among its alarms (an alarm without an episode id is one of its own)."""
    evaluations: int = 0
    """How many times the key metric was logged (its evaluations; a train loss's points)."""
    key_steps: list[int] = Field(default_factory=list, exclude=True)
    """The sorted steps at which the key metric was logged, for latency in evaluations. Kept
    in memory only (a dense run logs thousands): a report read back from JSON has none, and
    its scores fall back to the step window."""
    ticks: int
    usage: Usage = Field(default_factory=Usage)
    """What the LLM consumed and cost over the run's decisions."""
    llm_calls: int = 0
    fallbacks: int = 0
    """Decisions in which the ``ai`` policy fell back to the rules."""
    wall_s: float


class KindScore(_Result):
    """Detection quality for one kind over every replayed run (rules: ``evals.scoring``)."""

    kind: LabelKind
    events: int
    """Labelled events of this kind."""
    detected: int
    """Events whose first alarm of the kind came at or after onset, within the window."""
    late: int
    """Events whose first alarm after onset came past the window (missed)."""
    false_alarms: int
    """Runs with an alarm of this kind before the onset of a labelled event of any kind, or
    anywhere in a healthy run: at most one per run."""
    cross_kind: int = 0
    """Runs with an alarm of this kind after another kind's onset (and before its own):
    false, at most one per run."""
    alarms: int = 0
    """Every alarm of this kind, raw."""
    episodes: int = 0
    """Distinct episodes among the alarms of this kind."""
    precision: float | None
    """detected / (detected + false_alarms + cross_kind)."""
    recall: float | None
    f1: float | None
    latency_median: float | None
    """Steps from onset to the detecting alarm."""
    latency_max: int | None
    latency_evals_median: float | None = None
    """Evaluations of the key metric from onset to the detecting alarm."""
    latency_evals_max: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _before_issue_11(cls, data: Any) -> Any:
        """A score written before issue 11 counted cross-kind alarms one by one as
        ``after_other_event``, a figure of another unit: it is dropped, not converted."""
        if isinstance(data, dict) and "after_other_event" in data:
            data = {k: v for k, v in data.items() if k != "after_other_event"}
        return data


class ReplayReport(_Result):
    """The result of ``autopilot eval replay``."""

    kind: Literal["replay"] = "replay"
    policy: ReplayPolicy
    tolerance_steps: int
    tolerance_evals: int | None = None
    """Evaluations after onset that also count as a detection; ``None`` in reports from
    before there was an evaluation window (the step window alone)."""
    prompt_version: str | None = None
    model: str | None = None
    runs: list[ReplayRun]
    scores: list[KindScore]
    healthy_runs: int = 0
    healthy_runs_alarmed: int = 0
    """Healthy runs with any alarm at all (any kind, ``oscillation`` included)."""
    healthy_runs_alarmed_fraction: float | None = None
    """``healthy_runs_alarmed / healthy_runs``: the headline figure."""
    healthy_steps: int
    healthy_alarms: int
    false_alarms_per_1k_healthy_steps: float | None
    """Every alarm on a healthy run (any kind, ``oscillation`` included) per 1,000 steps."""
    tokens_per_run: float = 0.0
    usd_per_run: float = 0.0
    wall_s: float
    git_commit: str | None = None
    created: float


# --- closed-loop bench -----------------------------------------------------------------------


class Intervention(_Result):
    """One change applied during a bench run (a ledger row from the autopilot, or a rewind
    by the kernel's reflex)."""

    step: int
    knob: str
    """The knob set; empty for a rewind."""
    op: Literal["set", "rewind"] = "set"
    before: KnobValue | None = None
    after: KnobValue | None = None
    source: str


class BenchRun(_Result):
    """One training run of one task configuration under one policy and seed."""

    task: str
    """``dataset/config``, e.g. ``digits/lr_high``."""
    policy: BenchPolicy
    seed: int
    final: float | None
    """The key metric at the last evaluation; ``None`` when it was not finite."""
    diverged: bool = False
    interventions: list[Intervention] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    """``ai``: what the LLM consumed and cost over the run's decisions."""
    fallbacks: int = 0
    """``ai``: decisions the rules made because the LLM could not be used (see the run's
    ``autopilot decisions`` for each reason)."""
    wall_s: float
    runs_used: int = 1
    """Training runs this result cost (``tune`` runs several trials)."""
    params: dict[str, float] = Field(default_factory=dict)
    """The static knob values it trained with (``tune``: the best trial's)."""
    curve: tuple[list[int], list[float | None]] = ([], [])
    """The key metric over the run: ``(steps, values)``."""
    mode: BenchMode | None = None
    """How the autopilot ran beside this run (``None``: no autopilot: ``none``, ``tune``)."""
    bug_step: int | None = None
    """The step at which the task's loop bug fired (``None``: the task has none)."""
    reaction_steps: int | None = None
    """Steps from ``bug_step`` to the first change applied at or after it by the autopilot
    or a kernel reflex, by the ledger (``None``: no bug, or nothing was applied)."""


class OracleResult(_Result):
    """The best static configuration of a task setup, found by a grid sweep over seeds."""

    setup: str
    """Tasks sharing data and model share their oracle (``digits``, ``digits/small``...)."""
    params: dict[str, float]
    final: float | None
    """The best static configuration's final key metric, chosen on other seeds than it is
    scored on (``evals.bench.aggregate.oracle_of``); ``None`` when it diverged."""
    grid_points: int
    runs_used: int
    wall_s: float


class BenchCell(_Result):
    """One row of the bench table: a task under a policy, aggregated over seeds."""

    task: str
    policy: BenchPolicy | Literal["oracle"]
    seeds: int
    median: float | None
    """Median final key metric over seeds (a diverged seed counts as +inf for ``min``)."""
    lo: float | None
    hi: float | None
    gap_closed: float | None
    """``(none - policy) / (none - oracle)`` on the medians (sign flipped for ``max``);
    ``None`` when the static configuration is already within noise of the oracle."""
    diverged: int = 0
    """Seeds whose final key metric was not finite."""
    interventions: float
    """Median number of applied changes per run."""
    tokens: float = 0.0
    """Mean LLM tokens (in + out) per run."""
    usd: float = 0.0
    """Mean LLM cost per run."""
    wall_s: float
    """Total wall time of the cell's runs."""
    runs_used: int


class BenchReport(_Result):
    """The result of ``autopilot eval bench``."""

    kind: Literal["bench"] = "bench"
    mode: BenchMode = "lockstep"
    """How the rules and ai policies ran (``none``, ``tune`` and the oracle are the same in
    both modes)."""
    step_ms: float | None = None
    """``live``: the training's fixed pace, milliseconds per step."""
    tasks: list[str]
    policies: list[str]
    skipped: dict[str, str] = Field(default_factory=dict)
    """Policies not run, with why (``ai``: no provider configured)."""
    seeds: int
    key_metric: str
    key_mode: Literal["min", "max"]
    setups: dict[str, str] = Field(default_factory=dict)
    """Task -> its setup (the oracle it is compared with)."""
    descriptions: dict[str, str] = Field(default_factory=dict)
    """Task -> what is wrong (or right) with its starting configuration."""
    runs: list[BenchRun]
    oracles: list[OracleResult]
    cells: list[BenchCell]
    wall_s: float
    workers: int
    git_commit: str | None = None
    created: float


# --- multi-run bench -------------------------------------------------------------------------

MultiPolicy = Literal["rules", "online", "tune", "random"]
MULTI_POLICIES: tuple[MultiPolicy, ...] = ("rules", "online", "tune", "random")
"""``rules``, ``online``: the autopilot with memory, run after run; ``tune``, ``random``: a
search across runs (Optuna TPE, random search), the starting configuration first."""
MEMORY_POLICIES: tuple[MultiPolicy, ...] = ("rules", "online")
"""The multi-run policies whose numbers are runs with memory (the others', a search's
trials)."""


class MultiStep(_Result):
    """One run of a sequence (``rules``, ``online``) or one trial of a search."""

    number: int = Field(ge=1)
    """The run's (trial's) place in its sequence, from 1."""
    final: float | None
    """``rules``, ``online``: this run's final key metric. ``tune``, ``random``: that of the
    best trial so far (on the search seed), trained once on the scored seed. ``None``: not
    finite."""
    vs_oracle: float | None
    """``final`` against the oracle's, relative, positive when worse (either direction)."""
    within: bool
    """``vs_oracle`` at most the bench's tolerance."""
    search_final: float | None = None
    """``tune``, ``random``: this trial's final on the search seed."""
    params: dict[str, float] = Field(default_factory=dict)
    """``tune``, ``random``: this trial's configuration."""
    interventions: list[Intervention] = Field(default_factory=list)
    tuner_decisions: int = 0
    """Decisions the online tuner proposed (``proposer == "tune"``) in this run."""
    memory_runs: int | None = None
    """Runs the sequence's memory store held once this run had ended (``None``: no store
    file: nothing opened it)."""
    run_dir: str | None = None
    runs: int = 1
    """Training runs it cost (a search's new best also trains once on the scored seed)."""
    wall_s: float


class MultiSequence(_Result):
    """One task, policy and scored seed: the runs (trials) one after another."""

    task: str
    policy: MultiPolicy
    seed: int
    budget: int
    """Runs (trials) it was given; a search stops at the first within the tolerance."""
    memory_url: str | None = None
    """The store every run of an autopilot sequence was given (one fresh file each)."""
    steps: list[MultiStep]
    needed: int | None
    """The first ``number`` within the tolerance; ``None``: none within ``budget``."""
    runs_used: int
    """Training runs it cost (a search: its trials and the scoring runs of its bests)."""
    wall_s: float
    error: str | None = None
    """Why it ended before its budget and before reaching the tolerance (a run raised)."""


class MultiCell(_Result):
    """One row of the multi-run table: a task under a policy, over seeds."""

    task: str
    policy: MultiPolicy
    budget: int
    needed: list[int | None]
    """Per seed, in seed order (``None``: more than ``budget``)."""
    median: int | None
    """The upper median of ``needed`` (a miss counts as more than any number; ``None``: the
    median is a miss)."""
    vs_oracle: list[float | None]
    """Per run (trial) number, the median over seeds of ``MultiStep.vs_oracle`` (a search
    that stopped keeps its last value)."""
    within: list[int] = Field(default_factory=list)
    """Per run (trial) number, the seeds within the tolerance there (a stopped search, at its
    last trial, counts as within after it)."""
    runs_used: int
    tuner_decisions: int = 0
    """``online``: decisions the online tuner proposed over every run (0: the rules did
    everything, and the cell is the rules' figure)."""


class MultiReport(_Result):
    """The result of ``autopilot eval bench --multi N``."""

    kind: Literal["multi"] = "multi"
    tasks: list[str]
    policies: list[str]
    skipped: dict[str, str] = Field(default_factory=dict)
    """What was not run: ``good starts`` -> the tasks named that start well."""
    seeds: int
    runs: int
    """Runs per autopilot sequence."""
    trials: int
    """Trials per search (at most: it stops once within the tolerance)."""
    tolerance: float
    key_metric: str
    key_mode: Literal["min", "max"]
    descriptions: dict[str, str] = Field(default_factory=dict)
    oracles: dict[str, OracleResult]
    """Task -> its setup's oracle."""
    sequences: list[MultiSequence]
    cells: list[MultiCell]
    wall_s: float
    workers: int
    git_commit: str | None = None
    created: float
