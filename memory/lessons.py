"""What earlier runs teach: their measured interventions, grouped into lessons.

A ``Lesson`` is every measured change of one knob, one way, for one diagnosis kind (``lr``
down for a plateau), from the runs of tasks like the one at hand. Each case counts by how
similar its run's task is (``similarity``: the same task 1, the same model and optimizer
classes at a similar size 0.5, anything else 0) and how close its phase of the run was; a
lesson's ``weight`` is that count times how consistent its verdicts were. A lesson resting on
one observation is ``weak`` and says so in its ``line``. A lesson is advice for a policy: it
never overrides a guard.

Example:
    >>> from memory.records import InterventionRecord, RunRecord, TaskFingerprint
    >>> fp = TaskFingerprint(task="digits", model="MLP", optimizer="Adam", n_params=4810)
    >>> run = RunRecord(run_id="r1", run_dir="runs/r1", started_at=0, fingerprint=fp)
    >>> cut = InterventionRecord(run_id="r1", step=300, source="rules", kind="plateau",
    ...     knob="lr", before=0.1, after=0.05, verdict="better", effect_rel=0.08, phase=0.5)
    >>> [lesson.line() for lesson in lessons([run], [cut], fp)]
    ['plateau: lr x0.5 better 1 of 1 (+8% vs projection), this task; weak: 1 observation']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import median
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from kernel.knobs import knob_family
from memory.records import InterventionRecord, RunRecord, TaskFingerprint, Verdict

Direction = Literal["up", "down"]
SIMILAR_TASK = 0.5
"""A case from another task with the same model and optimizer classes at a similar size."""
SIMILAR_SIZE = 4.0
"""Parameter counts within this factor of each other are "a similar size"."""
PHASE_SCALE = 0.25
"""A case this far from the phase at hand (a fraction of the run) counts ``1/e`` as much."""


class Lesson(BaseModel):
    """The measured changes of one knob family, one way, for one diagnosis kind."""

    model_config = ConfigDict(frozen=True)

    kind: str
    knob: str
    """The knob family (``lr`` for ``lr[1]`` too)."""
    direction: Direction
    factor: float
    """The median factor the cases moved the knob by (``after / before``)."""
    better: int = 0
    neutral: int = 0
    worse: int = 0
    runs: int = 0
    """How many distinct runs the cases come from."""
    same_task: bool = False
    """Whether a case comes from the very task at hand (else from similar ones)."""
    median_effect: float | None = None
    """The median measured effect against the projected trend (+: better)."""
    weight: float = 0.0
    """Similarity- and phase-weighted count of the cases, times their consistency."""

    @property
    def seen(self) -> int:
        return self.better + self.neutral + self.worse

    @property
    def weak(self) -> bool:
        """One observation is an anecdote, not a lesson."""
        return self.seen < 2

    @property
    def verdict(self) -> Verdict:
        """The majority verdict (ties go to the more cautious one)."""
        counts: dict[Verdict, int] = {
            "worse": self.worse,
            "neutral": self.neutral,
            "better": self.better,
        }
        return max(counts, key=lambda v: counts[v])

    @property
    def consistency(self) -> float:
        """The share of cases that agree with the majority verdict."""
        return max(self.better, self.neutral, self.worse) / self.seen if self.seen else 0.0

    def line(self) -> str:
        """The lesson in one line, as the LLM and ``autopilot memory lessons`` show it."""
        counts = f"{self.verdict} {max(self.better, self.neutral, self.worse)} of {self.seen}"
        effect = "" if self.median_effect is None else f" ({self.median_effect:+.0%} vs projection)"
        where = "this task" if self.same_task else "similar tasks"
        if self.runs > 1:
            where += f", {self.runs} runs"
        weak = "; weak: 1 observation" if self.weak else ""
        return f"{self.kind}: {self.knob} x{self.factor:.2g} {counts}{effect}, {where}{weak}"


def similarity(case: TaskFingerprint, at_hand: TaskFingerprint) -> float:
    """How much a case from a run of ``case`` says about a run of ``at_hand``.

    Example:
        >>> a = TaskFingerprint(model="MLP", optimizer="Adam", n_params=1000)
        >>> similarity(a, a), similarity(a.model_copy(update={"n_params": 3000}), a)
        (1.0, 0.5)
        >>> similarity(a.model_copy(update={"optimizer": "SGD"}), a)
        0.0
    """
    if case.key() == at_hand.key():
        return 1.0
    if case.task is not None and case.task == at_hand.task:
        return 1.0  # the user's own name for it: the same task, a changed script
    if case.model is None or case.model != at_hand.model or case.optimizer != at_hand.optimizer:
        return 0.0
    a, b = case.n_params, at_hand.n_params
    if a and b and max(a, b) / min(a, b) > SIMILAR_SIZE:
        return 0.0
    return SIMILAR_TASK


class LessonIndex:
    """The cases of earlier runs grouped once, so that the lessons for a diagnosis and a
    phase cost a few array operations per group (a deciding tick's retrieval), not a pass
    over every case.

    Args:
        runs: the earlier runs (their fingerprints); ``exclude_run`` is left out.
        cases: their interventions; unmeasured ones and those of dissimilar tasks are
            dropped here.
        at_hand: the task of the run asking.
    """

    def __init__(
        self,
        runs: Iterable[RunRecord],
        cases: Iterable[InterventionRecord],
        at_hand: TaskFingerprint,
        *,
        exclude_run: str | None = None,
    ) -> None:
        fingerprints = {r.run_id: r.fingerprint for r in runs if r.run_id != exclude_run}
        members: dict[tuple[str, str, Direction], list[tuple[InterventionRecord, float]]] = (
            defaultdict(list)
        )
        for case in cases:
            fingerprint = fingerprints.get(case.run_id)
            move = _move(case)
            if fingerprint is None or case.verdict is None or case.kind is None or move is None:
                continue
            weight = similarity(fingerprint, at_hand)
            if weight > 0:
                members[(case.kind, knob_family(str(case.knob)), move[0])].append((case, weight))
        self._groups: list[tuple[Lesson, np.ndarray, np.ndarray]] = []
        for key, group in members.items():
            lesson = _lesson(key, group, at_hand, fingerprints)
            weights = np.array([w for _, w in group], dtype=float)
            phases = np.array(
                [np.nan if c.phase is None else c.phase for c, _ in group], dtype=float
            )
            self._groups.append((lesson, weights, phases))

    def __len__(self) -> int:
        return len(self._groups)

    def lessons(self, kind: str | None = None, phase: float | None = None) -> list[Lesson]:
        """The lessons for ``kind`` (every kind: None), heaviest first; with ``phase``,
        cases near it count more (a case of unknown phase counts in full)."""
        found = []
        for lesson, weights, phases in self._groups:
            if kind is not None and lesson.kind != kind:
                continue
            if phase is not None:
                near = np.exp(-np.abs(phases - phase) / PHASE_SCALE)
                weights = weights * np.where(np.isnan(phases), 1.0, near)
            weight = float(weights.sum()) * lesson.consistency
            found.append(lesson.model_copy(update={"weight": weight}))
        return sorted(found, key=lambda lesson: -lesson.weight)


def lessons(
    runs: Iterable[RunRecord],
    cases: Iterable[InterventionRecord],
    at_hand: TaskFingerprint,
    *,
    phase: float | None = None,
    exclude_run: str | None = None,
) -> list[Lesson]:
    """The lessons of ``cases`` (interventions of ``runs``) for a run of ``at_hand``,
    heaviest first; cases from dissimilar tasks, from ``exclude_run`` (the run at hand: its
    own effects steer it already), or not measured are left out. With ``phase``, cases
    near it count more (``LessonIndex`` keeps the grouping for many questions)."""
    return LessonIndex(runs, cases, at_hand, exclude_run=exclude_run).lessons(phase=phase)


def _lesson(
    key: tuple[str, str, Direction],
    members: Sequence[tuple[InterventionRecord, float]],
    at_hand: TaskFingerprint,
    fingerprints: dict[str, TaskFingerprint],
) -> Lesson:
    kind, knob, direction = key
    verdicts = [case.verdict for case, _ in members]
    effects = [case.effect_rel for case, _ in members if case.effect_rel is not None]
    factors = [move[1] for case, _ in members if (move := _move(case)) is not None]
    return Lesson(
        kind=kind,
        knob=knob,
        direction=direction,
        factor=median(factors),
        better=verdicts.count("better"),
        neutral=verdicts.count("neutral"),
        worse=verdicts.count("worse"),
        runs=len({case.run_id for case, _ in members}),
        same_task=any(fingerprints[case.run_id].key() == at_hand.key() for case, _ in members),
        median_effect=median(effects) if effects else None,
    )


def _move(case: InterventionRecord) -> tuple[Direction, float] | None:
    """Which way ``case`` moved its knob and by what factor (None: not one positive number
    to another, or no move)."""
    if case.op != "set" or case.knob is None:
        return None
    before, after = case.before, case.after
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and before
        and len(before) == len(after)
    ):
        before, after = before[0], after[0]  # per-group values move together
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (before, after))
    if not numbers or before <= 0 or after <= 0 or after == before:
        return None
    factor = float(after) / float(before)
    return ("up" if factor > 1 else "down"), factor


__all__ = ["Lesson", "LessonIndex", "lessons", "similarity"]
