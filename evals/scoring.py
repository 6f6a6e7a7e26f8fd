"""Scoring replayed alarms against labels, counted in what a user sees: runs, not ticks.

The rules, per labelled kind K and run:

- An event of kind K is **detected** when the first K alarm at or after its onset comes
  within the detection window: ``tolerance`` steps after onset, or ``tolerance_evals``
  evaluations of the run's key metric after onset, whichever window ends later (a run that
  evaluates every 1,000 steps cannot be answered within 300). The latency is the distance in
  steps, and in evaluations: the key metric's logged steps after onset up to and including
  the alarm's step (for a run judged by a train loss, its logged points). A plateau's window
  also spans a quarter of its run (``PLATEAU_WINDOW``): a lack of progress cannot be seen
  before a patience has passed. A first alarm past the window is **late** (a miss). No alarm
  at or after onset is a miss too.
- A K alarm before the onset of the run's first labelled event (of any kind: a run is healthy
  until then), or anywhere in a healthy run, is a **false alarm**. A run counts at most ONE
  false alarm per kind: a healthy run that alarms plateau at every tick is one wrong run to
  its user, not 887. The raw number of K alarms is kept apart (``alarms``).
- A K alarm after the onset of an event of another kind, and before K's own onset if the run
  has one (a plateau alarm on a run that overfits), is a **cross-kind** false alarm, at most
  one per run and kind, in its own column. Rule change (issue 11): these were counted apart
  as ``after_other_event`` and neither credited nor blamed; the user is told the wrong
  problem, so they now count against precision.
- Precision = detected / (detected + false alarms + cross-kind); recall = detected / events.
  Repeated alarms for an event already detected count neither way, nor does a late one.
- ``episodes``: distinct episodes alarmed (one problem from its onset until it resolves or
  is acted on; an alarm without an episode id is an episode of its own).

On healthy runs the headline is the share of them with ANY alarm (``oscillation`` included,
which no label names); every alarm there is also reported per 1,000 logged steps.

Example:
    >>> run = ReplayRun(run="r", path="r", key_metric="val/loss", steps=100, last_step=1000,
    ...                 events=[("plateau", 500)], alarms=1, ticks=100, wall_s=0.1,
    ...                 key_steps=[0, 250, 500, 750, 1000])
    >>> alarm = Alarm(run="r", step=540, kind="plateau", metric="val/loss", message="flat")
    >>> s = score_kind("plateau", [run], [alarm], tolerance=300)
    >>> s.detected, s.precision, s.latency_median, s.latency_evals_median
    (1, 1.0, 40.0, 0.0)
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from dataclasses import dataclass

from evals.results import LABEL_KINDS, Alarm, KindScore, LabelKind, ReplayRun

DEFAULT_TOLERANCE = 300
"""Steps after onset within which a first alarm counts as a detection."""
DEFAULT_TOLERANCE_EVALS = 3
"""Evaluations of the key metric after onset within which a first alarm counts as one."""
PLATEAU_WINDOW = 0.25
"""A plateau's window also spans this fraction of its run after onset: no progress is a
matter of time, which no detector can see before its patience (20 % of a run of known
length) has passed."""


@dataclass(frozen=True, kw_only=True)
class HealthyRate:
    """What healthy runs saw: how many of them alarmed, and every alarm against their steps."""

    runs: int
    runs_alarmed: int
    steps: int
    alarms: int

    @property
    def per_1k_steps(self) -> float | None:
        return 1000.0 * self.alarms / self.steps if self.steps else None

    @property
    def runs_alarmed_fraction(self) -> float | None:
        return self.runs_alarmed / self.runs if self.runs else None


@dataclass(frozen=True, kw_only=True)
class RunVerdict:
    """What one run shows for one kind (see the module docstring)."""

    event: bool = False
    detected: bool = False
    late: bool = False
    false_alarm: bool = False
    cross_kind: bool = False
    latency: int | None = None
    latency_evals: int | None = None


def score_all(
    runs: list[ReplayRun],
    alarms: list[Alarm],
    *,
    tolerance: int,
    tolerance_evals: int | None = DEFAULT_TOLERANCE_EVALS,
) -> tuple[list[KindScore], HealthyRate]:
    """Scores for every labelled kind, and what the healthy runs saw."""
    scores = [
        score_kind(kind, runs, alarms, tolerance=tolerance, tolerance_evals=tolerance_evals)
        for kind in LABEL_KINDS
    ]
    healthy = [r for r in runs if not r.events]
    names = {r.run for r in healthy}
    return scores, HealthyRate(
        runs=len(healthy),
        runs_alarmed=len({a.run for a in alarms if a.run in names}),
        steps=sum(r.last_step for r in healthy),
        alarms=sum(1 for a in alarms if a.run in names),
    )


def score_kind(
    kind: LabelKind,
    runs: list[ReplayRun],
    alarms: list[Alarm],
    *,
    tolerance: int,
    tolerance_evals: int | None = DEFAULT_TOLERANCE_EVALS,
) -> KindScore:
    """Detection quality for ``kind`` over ``runs`` (see the module docstring);
    ``tolerance_evals=None`` scores by the step window alone."""
    mine = [a for a in alarms if a.kind == kind]
    by_run: dict[str, list[int]] = defaultdict(list)
    for alarm in mine:
        by_run[alarm.run].append(alarm.step)
    verdicts = [
        judge_run(kind, run, sorted(by_run.get(run.run, [])), tolerance, tolerance_evals)
        for run in runs
    ]
    detected = sum(v.detected for v in verdicts)
    wrong = sum(v.false_alarm for v in verdicts) + sum(v.cross_kind for v in verdicts)
    events = sum(v.event for v in verdicts)
    precision, recall = _ratio(detected, detected + wrong), _ratio(detected, events)
    steps = [v.latency for v in verdicts if v.latency is not None]
    evals = [v.latency_evals for v in verdicts if v.latency_evals is not None]
    return KindScore(
        kind=kind,
        events=events,
        detected=detected,
        late=sum(v.late for v in verdicts),
        false_alarms=sum(v.false_alarm for v in verdicts),
        cross_kind=sum(v.cross_kind for v in verdicts),
        alarms=len(mine),
        episodes=count_episodes(mine),
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        latency_median=float(statistics.median(steps)) if steps else None,
        latency_max=max(steps) if steps else None,
        latency_evals_median=float(statistics.median(evals)) if evals else None,
        latency_evals_max=max(evals) if evals else None,
    )


def judge_run(
    kind: LabelKind,
    run: ReplayRun,
    steps: list[int],
    tolerance: int,
    tolerance_evals: int | None,
) -> RunVerdict:
    """The verdict for ``kind`` on ``run``, given the sorted steps of its ``kind`` alarms."""
    first_onset = min((onset for _, onset in run.events), default=None)
    own = next((onset for k, onset in run.events if k == kind), None)
    false_alarm = any(first_onset is None or s < first_onset for s in steps)
    cross = first_onset is not None and any(
        first_onset <= s and (own is None or s < own) for s in steps
    )
    if own is None:
        return RunVerdict(false_alarm=false_alarm, cross_kind=cross)
    first = next((s for s in steps if s >= own), None)
    if first is None:
        return RunVerdict(event=True, false_alarm=false_alarm, cross_kind=cross)
    latency, evals = first - own, evaluations_between(run, own, first)
    in_evals = evals is not None and tolerance_evals is not None and evals <= tolerance_evals
    in_run = kind == "plateau" and latency <= PLATEAU_WINDOW * run.last_step
    hit = latency <= tolerance or in_evals or in_run
    return RunVerdict(
        event=True,
        detected=hit,
        late=not hit,
        false_alarm=false_alarm,
        cross_kind=cross,
        latency=latency if hit else None,
        latency_evals=evals if hit else None,
    )


def evaluations_between(run: ReplayRun, onset: int, step: int) -> int | None:
    """Evaluations of ``run``'s key metric in ``(onset, step]``; ``None`` when its key steps
    are unknown (a report loaded from JSON, a key metric never logged)."""
    if not run.key_steps:
        return None
    return bisect.bisect_right(run.key_steps, step) - bisect.bisect_right(run.key_steps, onset)


def window_end(
    run: ReplayRun,
    onset: int,
    *,
    tolerance: int,
    tolerance_evals: int | None,
    kind: LabelKind | None = None,
) -> int:
    """The last step at which a first alarm still detects an event of ``run`` at ``onset``."""
    end = onset + tolerance
    if kind == "plateau":
        end = max(end, onset + int(PLATEAU_WINDOW * run.last_step))
    if run.key_steps and tolerance_evals is not None:
        # the evaluation that would be one too many; with none left, the run's end
        too_many = bisect.bisect_right(run.key_steps, onset) + tolerance_evals
        evals_end = run.key_steps[too_many] - 1 if too_many < len(run.key_steps) else None
        end = max(end, run.last_step if evals_end is None else evals_end)
    return end


def count_episodes(alarms: list[Alarm]) -> int:
    """Distinct episodes among ``alarms`` (per run; an alarm without an id is its own)."""
    keys: set[tuple[str, str | int]] = set()
    for i, alarm in enumerate(alarms):
        keys.add((alarm.run, alarm.episode if alarm.episode is not None else i))
    return len(keys)


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
