"""Scoring replayed alarms against labels: precision, recall, F1 and latency per kind.

The rules, per labelled kind K and run:

- An event of kind K is **detected** when the first K alarm at or after its onset comes
  within ``tolerance`` steps of it; the latency is the distance. A first alarm after that is
  **late** (a miss). No alarm at or after onset is a miss too.
- A K alarm is a **false alarm** when it comes before the onset of the run's first labelled
  event (of any kind: a run is healthy until then), or anywhere in a healthy run.
- A K alarm after the onset of an event of another kind only (a plateau alarm after a
  divergence) is counted apart as ``after_other_event``: the labels do not say whether the
  run also plateaued after it diverged, so it is neither credited nor blamed.
- Precision = detected / (detected + false alarms); recall = detected / events. Repeated
  alarms for an event already detected count neither way.

On healthy runs every alarm (``oscillation`` included, which no label names) is a false
alarm, reported per 1,000 logged steps.

Example:
    >>> run = ReplayRun(run="r", path="r", key_metric="val/loss", steps=100, last_step=1000,
    ...                 events=[("plateau", 500)], alarms=1, ticks=100, wall_s=0.1)
    >>> alarm = Alarm(run="r", step=540, kind="plateau", metric="val/loss", message="flat")
    >>> s = score_kind("plateau", [run], [alarm], tolerance=300)
    >>> s.detected, s.precision, s.latency_median
    (1, 1.0, 40.0)
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from evals.results import LABEL_KINDS, Alarm, KindScore, LabelKind, ReplayRun

DEFAULT_TOLERANCE = 300
"""Steps after onset within which a first alarm counts as a detection."""


@dataclass(frozen=True, kw_only=True)
class HealthyRate:
    """Every alarm on healthy runs, against the steps those runs span."""

    steps: int
    alarms: int

    @property
    def per_1k_steps(self) -> float | None:
        return 1000.0 * self.alarms / self.steps if self.steps else None


def score_all(
    runs: list[ReplayRun], alarms: list[Alarm], *, tolerance: int
) -> tuple[list[KindScore], HealthyRate]:
    """Scores for every labelled kind, and the false-alarm rate on healthy runs."""
    scores = [score_kind(kind, runs, alarms, tolerance=tolerance) for kind in LABEL_KINDS]
    healthy = {r.run for r in runs if not r.events}
    return scores, HealthyRate(
        steps=sum(r.last_step for r in runs if r.run in healthy),
        alarms=sum(1 for a in alarms if a.run in healthy),
    )


def score_kind(
    kind: LabelKind, runs: list[ReplayRun], alarms: list[Alarm], *, tolerance: int
) -> KindScore:
    """Detection quality for ``kind`` over ``runs`` (see the module docstring)."""
    by_run: dict[str, list[int]] = defaultdict(list)
    for alarm in alarms:
        if alarm.kind == kind:
            by_run[alarm.run].append(alarm.step)
    events = detected = late = false_alarms = after_other = 0
    latencies: list[int] = []
    for run in runs:
        steps = sorted(by_run.get(run.run, []))
        first_onset = min((onset for _, onset in run.events), default=None)
        own = next((onset for k, onset in run.events if k == kind), None)
        before_any = [s for s in steps if first_onset is None or s < first_onset]
        false_alarms += len(before_any)
        if own is None:
            after_other += len(steps) - len(before_any)
            continue
        events += 1
        after_other += sum(1 for s in steps if first_onset is not None and first_onset <= s < own)
        first = next((s for s in steps if s >= own), None)
        if first is not None and first - own <= tolerance:
            detected += 1
            latencies.append(first - own)
        elif first is not None:
            late += 1
    precision = _ratio(detected, detected + false_alarms)
    recall = _ratio(detected, events)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    return KindScore(
        kind=kind,
        events=events,
        detected=detected,
        late=late,
        false_alarms=false_alarms,
        after_other_event=after_other,
        precision=precision,
        recall=recall,
        f1=f1,
        latency_median=float(statistics.median(latencies)) if latencies else None,
        latency_max=max(latencies) if latencies else None,
    )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
