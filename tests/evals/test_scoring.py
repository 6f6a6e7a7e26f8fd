"""Scoring alarms against labels: every rule of evals.scoring, on hand-made alarms."""

from __future__ import annotations

import pytest

from evals.results import Alarm, LabelKind, ReplayRun
from evals.scoring import score_all, score_kind


def run(name: str, *events: tuple[LabelKind, int], last_step: int = 1000) -> ReplayRun:
    return ReplayRun(
        run=name, path=name, key_metric="val/loss", steps=last_step, last_step=last_step,
        events=list(events), alarms=0, ticks=0, wall_s=0.0,
    )  # fmt: skip


def alarm(name: str, kind: str, step: int) -> Alarm:
    return Alarm(run=name, step=step, kind=kind, metric="val/loss", message="m")


def test_a_first_alarm_within_tolerance_is_a_detection_with_its_latency():
    s = score_kind("plateau", [run("a", ("plateau", 500))], [alarm("a", "plateau", 620)],
                   tolerance=300)  # fmt: skip
    assert (s.events, s.detected, s.late, s.false_alarms) == (1, 1, 0, 0)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert (s.latency_median, s.latency_max) == (120.0, 120)


def test_a_first_alarm_past_the_tolerance_is_late_and_a_miss():
    s = score_kind("plateau", [run("a", ("plateau", 500))], [alarm("a", "plateau", 801)],
                   tolerance=300)  # fmt: skip
    assert (s.detected, s.late, s.recall, s.precision) == (0, 1, 0.0, None)
    assert s.latency_median is None


def test_an_alarm_at_onset_counts_and_one_before_is_a_false_alarm():
    alarms = [alarm("a", "divergence", 499), alarm("a", "divergence", 500)]
    s = score_kind("divergence", [run("a", ("divergence", 500))], alarms, tolerance=300)
    assert (s.detected, s.false_alarms, s.latency_max) == (1, 1, 0)
    assert s.precision == 0.5 and s.f1 == pytest.approx(2 / 3)


def test_repeated_alarms_after_a_detection_count_neither_way():
    alarms = [alarm("a", "plateau", s) for s in (550, 650, 750, 950)]
    s = score_kind("plateau", [run("a", ("plateau", 500))], alarms, tolerance=300)
    assert (s.detected, s.false_alarms, s.precision) == (1, 0, 1.0)


def test_alarms_on_other_runs_are_false_before_their_first_onset_and_apart_after():
    runs = [run("healthy"), run("div", ("divergence", 400))]
    alarms = [alarm("healthy", "plateau", 900), alarm("div", "plateau", 300),
              alarm("div", "plateau", 700)]  # fmt: skip
    s = score_kind("plateau", runs, alarms, tolerance=300)
    assert (s.events, s.false_alarms, s.after_other_event) == (0, 2, 1)
    assert (s.precision, s.recall, s.f1) == (0.0, None, None)


def test_an_alarm_between_another_kinds_onset_and_its_own_is_apart():
    runs = [run("a", ("divergence", 300), ("plateau", 600))]
    alarms = [alarm("a", "plateau", 100), alarm("a", "plateau", 400), alarm("a", "plateau", 650)]
    s = score_kind("plateau", runs, alarms, tolerance=300)
    assert (s.false_alarms, s.after_other_event, s.detected) == (1, 1, 1)


def test_healthy_runs_count_every_alarm_per_thousand_steps():
    runs = [run("h1", last_step=1000), run("h2", last_step=3000), run("sick", ("plateau", 10))]
    alarms = [alarm("h1", "oscillation", 10), alarm("h2", "plateau", 10),
              alarm("sick", "plateau", 20)]  # fmt: skip
    scores, healthy = score_all(runs, alarms, tolerance=300)
    assert [s.kind for s in scores] == ["plateau", "divergence", "overfitting"]
    assert (healthy.steps, healthy.alarms, healthy.per_1k_steps) == (4000, 2, 0.5)


def test_no_healthy_runs_gives_no_rate():
    _, healthy = score_all([run("sick", ("plateau", 10))], [], tolerance=300)
    assert healthy.per_1k_steps is None
