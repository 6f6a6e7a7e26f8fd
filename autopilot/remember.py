"""The memory store as one run's autopilot uses it: what it writes as it goes, what it reads
back (``RunMemory``).

Written, from typed data only (ledger rows, effect records, ``kernel.json``):

- the run (``memory.records.RunRecord``): its task's fingerprint (``kernel.json``'s ``task``,
  ``[memory] task``, ``max_steps``), its starting knob values, its best and final key
  metric and a compressed trajectory, updated as it trains and when it ends;
- each applied change (``InterventionRecord``): the diagnosis it answered with that
  decision's evidence, the phase of the run, the knob before and after, its source; the
  kernel's reflexes and every rewind; and, once measured, the effect and its verdict.

Read back, once per run and cached (a deciding tick pays no query): the measured cases of
earlier runs of this task and similar ones, as ``memory.lessons.Lesson``. The rules take
them as priors, the LLM reads their lines, and a run of a known task starts with the changes
that helped its earlier runs early on (``start_plan``).

Memory must never take the autopilot down: a store that cannot be opened or written turns
memory off for the run with the reason, logged once and shown by ``autopilot status``.

Example:
    >>> import tempfile
    >>> from autopilot.config import Settings
    >>> memory = RunMemory(tempfile.mkdtemp(), Settings(memory={"enabled": False}))
    >>> memory.off_reason
    'memory is off ([memory] enabled = false): runs neither learn nor use what earlier ones learned'
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import geometric_mean
from typing import Any, TypeGuard, TypeVar

from autopilot.config import Settings
from autopilot.decisions import DecisionLog, EffectRecord
from kernel import KernelState, LedgerRow, read_ledger
from kernel.knobs import knob_family
from memory import InterventionRecord, MemoryStore, RunRecord, StoreError, TaskFingerprint
from memory.lessons import Lesson, LessonIndex, similarity
from memory.records import compress_trajectory

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_EARLIER_RUNS = 100
"""A run reads the cases of at most this many earlier runs (the most similar, newest)."""
SAVE_EVERY_FRAC = 0.05
"""The run's record is rewritten after this fraction of its steps (or ``SAVE_EVERY_STEPS``)."""
SAVE_EVERY_STEPS = 200
EARLY_PHASE = 0.5
"""A change made before this fraction of the run counts for the start of the next one."""
MIN_PLAN_MOVE = 0.1
"""A start plan skips a knob whose remembered factor (or what is left of it) is within
10 % of 1."""
PLAN_KNOBS = ("lr", "weight_decay", "grad_clip")
"""The knob families a start plan may change (and ``loss.*`` weights)."""
EVENT_KINDS = frozenset({"divergence"})
"""Changes for these kinds answer an event of their run (a spike, a reflex), not its start:
a plan never repeats them."""
EVENT_EVIDENCE = ("lr_collapsed", "reflex")
"""Evidence of an event too: a collapsed lr restored (a bug that fires mid-run: raising the
lr before it only adds to the collapse's aftermath), a reflex's rewind."""
PLAN_STEP = 2.0
"""How much further a plan goes than the latest run that followed one, while each of that
run's plan steps measured better."""
START_EVIDENCE = ("slow", "too_big")
"""Evidence that the update ratio found the starting value itself wrong."""


def run_id_of(run_dir: Path, kernel: KernelState) -> str:
    """The run's id in the store: its directory's name, its segment and a short hash of
    where and when it started (the same run is the same id on every machine that reads it).

    Example:
        >>> k = KernelState(pid=1, host="h", started_at=1.5e9, heartbeat=0, segment=1)
        >>> run_id_of(Path("/runs/exp3"), k)
        'exp3.1.87e3cbfc'
    """
    digest = hashlib.sha256(f"{kernel.host}:{kernel.started_at:.6f}".encode()).hexdigest()
    return f"{run_dir.name}.{kernel.segment}.{digest[:8]}"


def fingerprint_of(kernel: KernelState, settings: Settings) -> TaskFingerprint:
    """The task of the run ``kernel`` describes (the script's ``task=`` wins over the
    config's ``[memory] task``)."""
    info = kernel.task
    return TaskFingerprint(
        task=(info.task if info and info.task else None) or settings.memory.task,
        model=info.model if info else None,
        optimizer=info.optimizer if info else None,
        n_params=info.n_params if info else None,
        dataset_size=info.dataset_size if info else None,
        max_steps=kernel.max_steps,
    )


@dataclass(frozen=True, kw_only=True)
class PlannedChange:
    """One change a run of a known task starts with: the factor its earlier runs needed."""

    knob: str
    factor: float
    runs: int
    """How many earlier runs of the task agree on it."""
    by_step: int | None
    """About when those runs made it (the median step)."""
    total: float | None = None
    """The whole plan's factor from the run's start (``factor`` is what is left of it)."""
    due_step: int = 0
    """When to make it: at the start (0) when the earlier runs' update ratio said the
    starting value was wrong (``slow``, ``too_big``), else about when they first made it
    (the median of their first such steps): weight decay that helped a fitted model at step
    200 can hold back the same model at step 20."""

    @property
    def weak(self) -> bool:
        return self.runs < 2

    def describe(self) -> str:
        when = f" by step ~{self.by_step}" if self.by_step is not None else ""
        runs = "the last run" if self.runs == 1 else f"the last {self.runs} runs"
        weak = " (weak: 1 run)" if self.weak else ""
        total = self.total if self.total is not None else self.factor
        left = "" if _close(total, self.factor) else f", x{self.factor:.2g} of it left"
        return f"{runs} of this task needed {self.knob} x{total:.2g}{when}{weak}{left}"


class RunMemory:
    """The memory store for the run in ``run_dir`` (opened on first use)."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        settings: Settings,
        *,
        opener: Callable[[str], MemoryStore] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.url = settings.memory.store_url()
        self._opener = opener
        self.off_reason: str | None = None
        if not settings.memory.enabled:
            self.off_reason = (
                "memory is off ([memory] enabled = false): runs neither learn nor use what "
                "earlier ones learned"
            )
        self._store: MemoryStore | None = None
        self._run: RunRecord | None = None
        self._cases: dict[str, InterventionRecord] = {}
        self._past: tuple[list[RunRecord], list[InterventionRecord]] | None = None
        self._lessons: dict[tuple[str | None, float | None], list[Lesson]] = {}
        self._lesson_index: LessonIndex | None = None
        self._helped_by: dict[tuple[str, str], list[InterventionRecord]] | None = None
        self._same_task: list[RunRecord] | None = None
        self._stored = False
        """Whether this run's record is in the store (``begin`` wrote it, ``peek`` found it)."""
        self._saved_step = -(10**9)

    # -- the store -----------------------------------------------------------------------
    @property
    def run(self) -> RunRecord | None:
        """This run's record as last written (None before the first due tick)."""
        return self._run

    def _open(self) -> MemoryStore | None:
        if self.off_reason is not None:
            return None
        if self._store is None:
            try:
                if self._opener is not None:
                    self._store = self._opener(self.url)
                else:
                    from memory import open_store

                    self._store = open_store(self.url)
            except StoreError as exc:
                self._turn_off(str(exc))
                return None
            except Exception as exc:  # a backend's own error, not yet a StoreError
                self._turn_off(f"cannot open {_safe_url(self.url)}: {type(exc).__name__}: {exc}")
                return None
        return self._store

    def _safely(self, what: str, action: Callable[[MemoryStore], T]) -> T | None:
        store = self._open()
        if store is None:
            return None
        try:
            return action(store)
        except Exception as exc:  # any backend's error: memory off, the autopilot goes on
            self._turn_off(f"{what} failed: {type(exc).__name__}: {exc}")
            return None

    def _turn_off(self, why: str) -> None:
        self.off_reason = (
            f"memory is off for this run: {why} (check [memory] url or $AUTOPILOT_MEMORY_URL;"
            " the run goes on without it)"
        )
        logger.warning("%s", self.off_reason)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- writing -------------------------------------------------------------------------
    def begin(self, kernel: KernelState, key_metric: str, key_mode: str) -> bool:
        """Know the run ``kernel`` describes (a new one is written, an earlier one found
        again after a restart); whether memory is on for it."""
        run_id = run_id_of(self.run_dir, kernel)
        if self._run is not None and self._run.run_id == run_id:
            return self.off_reason is None
        result = self._safely("opening the run", lambda s: self._begin(s, run_id, kernel))
        if result is not None:
            self._run, self._stored = result, True
            self._forget_reads()
            if not self._run.key_metric:
                self._run = self._run.model_copy(
                    update={"key_metric": key_metric, "key_mode": key_mode}
                )
        return self.off_reason is None and self._run is not None

    def _begin(self, store: MemoryStore, run_id: str, kernel: KernelState) -> RunRecord:
        found = store.run(run_id)
        if found is not None:  # a restarted watcher
            cases = store.interventions(run_id=run_id)
            self._cases = {c.command_id: c for c in cases if c.command_id}
            return found
        self._cases = {}
        record = RunRecord(
            run_id=run_id,
            run_dir=str(self.run_dir.resolve()),
            started_at=kernel.started_at,
            fingerprint=fingerprint_of(kernel, self.settings),
            start_knobs=_start_knobs(kernel, read_ledger(self.run_dir)),
        )
        store.put_run(record)
        return record

    def note(
        self,
        rows: Sequence[Mapping[str, Any]],
        effects: Sequence[EffectRecord],
        *,
        max_steps: int | None,
        log: DecisionLog,
    ) -> None:
        """Record the applied ledger ``rows`` (knob changes, rewinds, reflexes) and the
        ``effects`` measured this tick."""
        run = self._run
        if run is None or self.off_reason is not None or not (rows or effects):
            return
        items: list[InterventionRecord] = []
        for raw in rows:
            item = _intervention(run.run_id, LedgerRow.model_validate(raw), max_steps, log)
            if item is not None:
                items.append(item)
        for effect in effects:
            known = self._cases.get(effect.command_id)
            if known is not None:
                items.append(
                    known.model_copy(
                        update={"effect_rel": effect.change_rel, "verdict": effect.verdict}
                    )
                )
        if (
            items
            and self._safely("writing interventions", lambda s: _add_all(s, items)) is not None
        ):
            self._cases.update({i.command_id: i for i in items if i.command_id})

    def progress(
        self, step: int, value: float | None, best: float | None, *, max_steps: int | None
    ) -> None:
        """Fold the key metric at ``step`` into the run's record; rewrite it now and then."""
        run = self._run
        if run is None or self.off_reason is not None or value is None or not math.isfinite(value):
            return
        trajectory = [p for p in run.trajectory if p[0] < step] + [(step, float(value))]
        update: dict[str, Any] = {
            "trajectory": compress_trajectory(trajectory),
            "final": float(value),
        }
        if best is not None and math.isfinite(best):
            update["best"] = float(best)
        self._run = run.model_copy(update=update)
        every = SAVE_EVERY_STEPS if max_steps is None else max(10, int(SAVE_EVERY_FRAC * max_steps))
        if step - self._saved_step >= every:
            self._save()
            self._saved_step = step

    def finish(self) -> None:
        """Write the run's record as it ended (the watcher closes)."""
        if self._run is not None and self.off_reason is None:
            self._run = self._run.model_copy(update={"ended_at": time.time()})
            self._save()

    def _save(self) -> None:
        run = self._run
        if run is not None:
            self._safely("writing the run", lambda s: s.put_run(run))

    # -- reading -------------------------------------------------------------------------
    def _forget_reads(self) -> None:
        """Drop what was read for the previous run (a new run reads its own)."""
        self._past, self._lesson_index, self._helped_by, self._same_task = None, None, None, None
        self._lessons = {}

    def _past_cases(self) -> tuple[list[RunRecord], list[InterventionRecord]]:
        """The most similar earlier runs (at most ``MAX_EARLIER_RUNS``, the same task
        first, then the newest) and their interventions, read once per run."""
        if self._past is None:
            run = self._run
            if run is None:
                return [], []
            loaded = self._safely("reading earlier runs", lambda s: _similar_runs(s, run))
            self._past = loaded if loaded is not None else ([], [])
        return self._past

    def _index(self) -> LessonIndex:
        if self._lesson_index is None:
            run = self._run
            runs, cases = self._past_cases()
            at_hand = run.fingerprint if run is not None else TaskFingerprint()
            self._lesson_index = LessonIndex(runs, cases, at_hand)
        return self._lesson_index

    def lessons(self, kind: str | None = None, phase: float | None = None) -> list[Lesson]:
        """What earlier runs measured, for ``kind`` (all kinds: None), heaviest first."""
        if self._run is None or self.off_reason is not None:
            return []
        key = (kind, None if phase is None else round(phase, 2))
        if key not in self._lessons:
            self._lessons[key] = self._index().lessons(kind, key[1])
        return self._lessons[key]

    def notes(self, limit: int = 8) -> str:
        """The lessons as lines for the LLM's prompt (its renderer budgets the tokens)."""
        return "\n".join(lesson.line() for lesson in self.lessons()[:limit])

    def earlier_runs(self) -> list[RunRecord]:
        """The earlier runs of this very task, oldest first."""
        run = self._run
        if run is None:
            return []
        if self._same_task is None:
            key = run.task_key
            self._same_task = [r for r in self._past_cases()[0] if r.task_key == key]
        return self._same_task

    def start_plan(self, knobs: Mapping[str, Any]) -> list[PlannedChange]:
        """What is left to do of the changes a run of a known task starts with. For each
        knob: the net factor of the changes measured ``better`` in the first half of each
        earlier run of this task that started where this one did, when those runs agree on
        its direction; less what the changes of this run (any source) have moved it by
        since, so a plan the guards cut short goes on after the cooldown. Factors, not
        values: a scheduled lr moves by itself. ``knobs``: the run's knobs now (a knob
        it no longer has is not planned)."""
        run = self._run
        if run is None or self.off_reason is not None:
            return []
        earlier = self.earlier_runs()
        if not earlier:
            return []
        helped_by = self._helped()
        plan: list[PlannedChange] = []
        for knob, start in sorted(run.start_knobs.items()):
            now = knobs.get(knob)
            if not _plannable(knob) or not _number(start) or not _number(now) or start <= 0:
                continue
            factors: list[float] = []
            steps: list[int] = []
            firsts: list[int] = []
            from_start = False
            followed: list[InterventionRecord] = []
            for past in earlier:
                began = past.start_knobs.get(knob)
                if not _number(began) or not _close(float(began), float(start)):
                    continue  # the script changed since: that run's lesson is not this one's
                helped = [c for c in helped_by.get((past.run_id, knob), []) if _early(c, past)]
                factors.append(math.prod(f for c in helped if (f := _factor(c)) is not None))
                followed = self._recalls(past.run_id, knob)  # the latest such run's, at the end
                if helped:
                    firsts.append(min(c.step for c in helped))
                    steps += [c.step for c in helped]
                    from_start |= any(_start_was_wrong(c) for c in helped)
            moved = [f for f in factors if not _close(f, 1.0)]
            if not moved or len(moved) * 2 < len(factors):
                continue  # most earlier runs needed no change to it
            if len({f > 1 for f in moved}) > 1:
                continue  # they disagree on the direction
            factor = geometric_mean(moved)
            if followed and not _close(factors[-1], 1.0):
                # the latest run followed a plan: build on where it ended, and one step
                # further while every step of its plan measured better (a line search
                # across runs; a step measured worse is rolled back and ends it)
                factor = factors[-1]
                if all(c.verdict == "better" for c in followed):
                    factor *= PLAN_STEP if factor > 1 else 1 / PLAN_STEP
            left = factor / self._moved(knob)
            if _close(left, 1.0) or (left > 1) != (factor > 1):
                continue  # done already (or overshot): nothing left of the plan
            plan.append(
                PlannedChange(
                    knob=knob,
                    factor=left,
                    runs=len(moved),
                    by_step=sorted(steps)[len(steps) // 2] if steps else None,
                    total=factor,
                    due_step=0 if from_start else sorted(firsts)[len(firsts) // 2],
                )
            )
        return plan

    def open_check(self) -> bool:
        """Open the store (``autopilot doctor``); whether it opened (``off_reason`` if not)."""
        return self._open() is not None

    def peek(self, kernel: KernelState) -> None:
        """Know the run ``kernel`` describes without writing anything (``autopilot status``)."""
        run_id = run_id_of(self.run_dir, kernel)
        found = self._safely("reading the run", lambda s: s.run(run_id))
        self._stored = found is not None
        self._run = found or RunRecord(
            run_id=run_id,
            run_dir=str(self.run_dir.resolve()),
            started_at=kernel.started_at,
            fingerprint=fingerprint_of(kernel, self.settings),
        )
        self._forget_reads()

    def _moved(self, knob: str) -> float:
        """The factor this run's own applied changes moved ``knob`` by."""
        moves = [
            f
            for c in self._cases.values()
            if c.knob == knob and c.op in ("set", "rollback") and (f := _factor(c)) is not None
        ]
        return math.prod(moves)

    def _recalls(self, run_id: str, knob: str) -> list[InterventionRecord]:
        """The changes a start plan made to ``knob`` in the earlier run ``run_id``."""
        return [
            c
            for c in self._past_cases()[1]
            if c.run_id == run_id and c.knob == knob and c.kind == "recall" and c.op == "set"
        ]

    def _helped(self) -> dict[tuple[str, str], list[InterventionRecord]]:
        """Per earlier run and knob, the changes a plan may repeat (``_plannable_case``)."""
        if self._helped_by is None:
            found: dict[tuple[str, str], list[InterventionRecord]] = {}
            for c in self._past_cases()[1]:
                if _plannable_case(c) and c.knob is not None:
                    found.setdefault((c.run_id, c.knob), []).append(c)
            self._helped_by = found
        return self._helped_by

    def status(self) -> str:
        """One line for ``autopilot status``."""
        if self.off_reason is not None:
            return self.off_reason
        run = self._run
        if run is None:
            return f"memory: {_safe_url(self.url)} (no run recorded yet)"
        earlier = len(self.earlier_runs())
        runs = f"{earlier} earlier run{'s' if earlier != 1 else ''}"
        if self._stored:
            runs = f"this run and {runs}"
        lessons = len(self.lessons())
        return (
            f"memory: {_safe_url(self.url)}; task {run.fingerprint.task or run.task_key}: "
            f"{runs}, {lessons} lesson{'s' if lessons != 1 else ''} from them"
        )


def _similar_runs(
    store: MemoryStore, run: RunRecord
) -> tuple[list[RunRecord], list[InterventionRecord]]:
    """The earlier runs whose task is like ``run``'s, the most similar and newest first
    (at most ``MAX_EARLIER_RUNS``), oldest first, and their interventions."""
    scored = [
        (similarity(r.fingerprint, run.fingerprint), r.started_at, r)
        for r in store.runs()
        if r.run_id != run.run_id
    ]
    chosen = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], -s[1]))
    runs = sorted((r for _, _, r in chosen[:MAX_EARLIER_RUNS]), key=lambda r: r.started_at)
    cases = [c for r in runs for c in store.interventions(run_id=r.run_id)]
    return runs, cases


def _add_all(store: MemoryStore, items: list[InterventionRecord]) -> int:
    for item in items:
        store.add_intervention(item)
    return len(items)


def _intervention(
    run_id: str, row: LedgerRow, max_steps: int | None, log: DecisionLog
) -> InterventionRecord | None:
    """The store's record of an applied ledger row (None for anything but a knob change or
    a rewind)."""
    if row.decision != "applied" or row.step is None:
        return None
    phase = row.step / max_steps if max_steps else None
    if row.op == "rewind":
        evidence: dict[str, Any] = {"snapshot_step": row.snapshot_step}
        if row.reflex is not None:
            evidence.update({"metric": row.reflex.metric, "cause": row.reflex.cause})
        return InterventionRecord(
            run_id=run_id,
            step=row.step,
            op="reflex" if row.reflex is not None else "rewind",
            source=row.source or "kernel",
            kind=row.for_diagnosis or ("divergence" if row.reflex is not None else None),
            evidence=evidence,
            phase=phase,
            command_id=row.command_id,
        )
    if row.knob is None or row.op not in (None, "set"):
        return None
    return InterventionRecord(
        run_id=run_id,
        step=row.step,
        op="rollback" if row.intent == "rollback" else "set",
        source=row.source or "unknown",
        kind=row.for_diagnosis,
        evidence=_evidence(log, row),
        phase=phase,
        knob=row.knob,
        before=row.before,
        after=row.after,
        command_id=row.command_id,
    )


def _evidence(log: DecisionLog, row: LedgerRow) -> dict[str, Any]:
    """The evidence of the diagnosis the change answered, from its decision record."""
    record = log.decision(row.decision_id) if row.decision_id else None
    if record is None:
        return {}
    for diagnosis in record.diagnoses:
        if diagnosis.kind == row.for_diagnosis:
            return dict(diagnosis.evidence)
    return {}


def _start_knobs(kernel: KernelState, rows: Sequence[LedgerRow]) -> dict[str, Any]:
    """Each knob's value at the start: the ``before`` of its first applied change, else its
    value now."""
    values: dict[str, Any] = {k.name: k.value for k in kernel.knobs}
    seen: set[str] = set()
    for row in rows:
        if row.decision == "applied" and row.knob in values and row.knob not in seen:
            seen.add(row.knob)
            values[row.knob] = row.before
    return values


def _factor(case: InterventionRecord) -> float | None:
    before, after = case.before, case.after
    if _number(before) and _number(after) and before > 0 and after > 0:
        return float(after) / float(before)
    return None


def _early(case: InterventionRecord, run: RunRecord) -> bool:
    """Whether ``case`` came in the first ``EARLY_PHASE`` of its run (of unknown length:
    of the steps its trajectory reached)."""
    if case.phase is not None:
        return case.phase < EARLY_PHASE
    last = run.trajectory[-1][0] if run.trajectory else None
    return last is not None and case.step < EARLY_PHASE * last


def _plannable_case(case: InterventionRecord) -> bool:
    """Whether a plan may repeat ``case``: a change measured ``better``, or an earlier plan's
    own change kept (``better`` or ``neutral``: that run needed it too, so the plan builds on
    the runs that followed it rather than forgetting them), and never an answer to an event
    (``EVENT_KINDS``, ``EVENT_EVIDENCE``)."""
    if case.op != "set" or case.kind in EVENT_KINDS:
        return False
    if any(case.evidence.get(key) not in (None, False) for key in EVENT_EVIDENCE):
        return False
    kept = ("better", "neutral") if case.kind == "recall" else ("better",)
    return case.verdict in kept


def _start_was_wrong(case: InterventionRecord) -> bool:
    return any(case.evidence.get(key) is True for key in START_EVIDENCE)


def _plannable(knob: str) -> bool:
    return knob_family(knob) in PLAN_KNOBS or knob.startswith("loss.")


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _close(a: float, b: float) -> bool:
    return a == b or (a > 0 and b > 0 and abs(math.log(a / b)) < math.log1p(MIN_PLAN_MOVE))


def _safe_url(url: str) -> str:
    """``url`` without a password (``postgresql://user:secret@host`` -> ``user:***``)."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


__all__ = ["PlannedChange", "RunMemory", "fingerprint_of", "run_id_of"]
