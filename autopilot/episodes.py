"""Episodes: one problem from its onset until it resolves or is acted on, not an alarm stream.

A detector reports a problem at every tick it holds. The tick turns those reports into
episodes: the first report of a kind opens an episode (kind, metric, onset, the evidence at
onset), and every later report of that kind joins it, carrying its id, until

* it is **acted on**: a change made for that kind is applied (its ledger row says so, as
  data: ``for_diagnosis``), after the episode opened; a problem that persists after the
  change is a new episode, decided again once ``cadence.repeat_after_steps`` has passed;
* it **resolves**: no detector reported it for ``resolve_after`` steps (at least
  ``cadence.repeat_after_steps``, and two evaluations of the metric that showed it).

An episode is decided once. In the auto modes an episode that no change has answered yet (the
guards held every action back) is decided again after ``cadence.repeat_after_steps``, as the
same episode; in the suggest modes its review item waits for a person.

**No echoes.** While an episode is open on a curve (a train/validation pair counts as one
curve), a report of a less urgent kind on that curve is dropped, and after the episode ends
for as long as it lasted (at least ``resolve_after`` steps), or for as long as its evidence
is measured against a best from before the earlier episode ended: a plateau of ``val/loss``
during its overfitting, or an overfitting after a divergence of ``train/loss``, is the same
event seen again, and needs evidence of its own, gathered once the first one is over.

Example:
    >>> from autopilot.diagnoses import Diagnosis
    >>> found = [Diagnosis(kind="overfitting", metric="val/loss", step=900, message="up"),
    ...          Diagnosis(kind="plateau", metric="val/loss", step=900, message="flat")]
    >>> book = Episodes.load({}, segment=0)
    >>> [(d.kind, d.episode) for d in book.observe(found, step=900, applied=[], cadences={})]
    [('overfitting', 'overfitting-s0-900')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from autopilot.detectors import PRIORITY
from autopilot.diagnoses import Diagnosis, Evidence
from kernel.metric_names import split_role

RESOLVE_AFTER_STEPS = 100
RESOLVE_AFTER_EVALS = 2


class Episode(BaseModel):
    """One problem: what it is, where and when it began, and how it ended (if it has)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    metric: str
    onset_step: int
    last_seen_step: int
    evidence: Evidence = {}
    """The evidence at onset."""
    ended_step: int | None = None
    ended: str | None = None
    """``acted`` (a change for it was applied) or ``resolved`` (no longer reported)."""

    @property
    def open(self) -> bool:
        return self.ended_step is None


def curve(metric: str) -> str:
    """The curve a metric is a view of: ``train/loss`` and ``val/loss`` are one curve.

    Example:
        >>> curve("val/loss"), curve("train_loss"), curve("lr")
        ('loss', 'loss', 'lr')
    """
    return split_role(metric)[1].lower()


class Episodes:
    """The episode of each kind in one run segment (the tick state keeps it as plain JSON)."""

    def __init__(self, episodes: dict[str, Episode], segment: int | None, resolve_after: int):
        self._by_kind = episodes
        self._segment = segment or 0
        self._resolve_after = resolve_after

    @classmethod
    def load(
        cls,
        raw: Mapping[str, Any],
        *,
        segment: int | None,
        resolve_after: int = RESOLVE_AFTER_STEPS,
    ) -> Episodes:
        """The episodes of a checkpointed tick state; an entry that does not validate (an
        older or damaged state) is forgotten, which at worst opens its episode again."""
        episodes = {}
        for kind, value in raw.items():
            try:
                episodes[kind] = Episode.model_validate(value)
            except ValidationError:
                continue
        return cls(episodes, segment, resolve_after)

    def dump(self) -> dict[str, dict[str, Any]]:
        return {kind: e.model_dump(mode="json") for kind, e in self._by_kind.items()}

    def get(self, kind: str) -> Episode | None:
        return self._by_kind.get(kind)

    def observe(
        self,
        found: Iterable[Diagnosis],
        *,
        step: int,
        applied: Iterable[Mapping[str, Any]],
        cadences: Mapping[str, float | None],
    ) -> list[Diagnosis]:
        """Fold this tick's reports in; the reports kept (echoes dropped), each carrying its
        episode's id and onset.

        Args:
            found: the detectors' diagnoses this tick.
            step: the run's step.
            applied: the applied ledger rows of this segment (``for_diagnosis``, ``step``).
            cadences: per metric its median steps between points (the summary's).
        """
        self._end_acted(applied)
        reports = sorted(found, key=_urgency)
        kept: list[Diagnosis] = []
        for d in reports:
            if self._echo(d, step, cadences):
                continue
            kept.append(self._join(d, step))
        seen = {d.kind for d in kept}
        for kind, e in self._by_kind.items():
            if e.open and kind not in seen and step - e.last_seen_step >= self._wait(e, cadences):
                self._by_kind[kind] = e.model_copy(update={"ended_step": step, "ended": "resolved"})
        return kept

    def _join(self, d: Diagnosis, step: int) -> Diagnosis:
        e = self._by_kind.get(d.kind)
        if e is None or not e.open:
            e = Episode(
                id=f"{d.kind}-s{self._segment}-{step}",
                kind=d.kind,
                metric=d.metric,
                onset_step=step,
                last_seen_step=step,
                evidence=dict(d.evidence),
            )
        else:
            e = e.model_copy(update={"last_seen_step": step})
        self._by_kind[d.kind] = e
        return d.model_copy(update={"episode": e.id, "onset_step": e.onset_step})

    def _echo(self, d: Diagnosis, step: int, cadences: Mapping[str, float | None]) -> bool:
        """Whether a more urgent episode on ``d``'s curve is open, or ended too recently."""
        for e in self._by_kind.values():
            if _urgency(e) >= _urgency(d) or curve(e.metric) != curve(d.metric):
                continue
            if e.open or step - (e.ended_step or step) < self._hold(e, cadences):
                return True
            best_step = d.evidence.get("best_step")  # the reference d measures against
            if isinstance(best_step, int) and best_step <= (e.ended_step or step):
                return True  # its evidence is the earlier event's: the best it had before
        return False

    def _end_acted(self, applied: Iterable[Mapping[str, Any]]) -> None:
        for row in applied:
            kind, at = row.get("for_diagnosis"), row.get("step")
            if not isinstance(kind, str) or not isinstance(at, int):
                continue
            e = self._by_kind.get(kind)
            if e is not None and e.open and at >= e.onset_step:
                self._by_kind[kind] = e.model_copy(update={"ended_step": at, "ended": "acted"})

    def _hold(self, e: Episode, cadences: Mapping[str, float | None]) -> int:
        """How long after ``e`` ended a less urgent kind on its curve stays an echo: as long
        as ``e`` lasted, and at least ``resolve_after`` (a curve recovering from a
        divergence is still far from the best it had, which no later overfitting or plateau
        explains)."""
        lasted = (e.ended_step or e.last_seen_step) - e.onset_step
        return max(lasted, self._wait(e, cadences))

    def _wait(self, e: Episode, cadences: Mapping[str, float | None]) -> int:
        cadence = cadences.get(e.metric) or 0.0
        return max(self._resolve_after, int(RESOLVE_AFTER_EVALS * cadence))


def _urgency(d: Diagnosis | Episode) -> int:
    """``PRIORITY`` order (most urgent first): a kind earlier there silences the later ones
    on its curve."""
    return PRIORITY.index(d.kind) if d.kind in PRIORITY else len(PRIORITY)


__all__ = ["Episode", "Episodes", "curve"]
