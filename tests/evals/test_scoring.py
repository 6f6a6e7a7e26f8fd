"""Scoring alarms against labels: every rule of evals.scoring, on hand-made alarms."""

from __future__ import annotations

import pytest

from evals.results import Alarm, LabelKind, ReplayRun
from evals.scoring import score_all, score_kind, window_end


def run(
    name: str, *events: tuple[LabelKind, int], last_step: int = 1000, every: int | None = None
) -> ReplayRun:
    """A run whose key metric was logged every ``every`` steps (unknown when ``None``)."""
    key_steps = list(range(0, last_step + 1, every)) if every else []
    return ReplayRun(
        run=name, path=name, key_metric="val/loss", steps=last_step, last_step=last_step,
        events=list(events), alarms=0, ticks=0, wall_s=0.0, key_steps=key_steps,
    )  # fmt: skip


def alarm(name: str, kind: str, step: int, episode: str | None = None) -> Alarm:
    return Alarm(run=name, step=step, kind=kind, metric="val/loss", message="m", episode=episode)


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


def test_alarms_on_other_runs_are_false_before_their_first_onset_and_cross_kind_after():
    runs = [run("healthy"), run("div", ("divergence", 400))]
    alarms = [alarm("healthy", "plateau", 900), alarm("div", "plateau", 300),
              alarm("div", "plateau", 700)]  # fmt: skip
    s = score_kind("plateau", runs, alarms, tolerance=300)
    assert (s.events, s.false_alarms, s.cross_kind, s.alarms) == (0, 2, 1, 3)
    assert (s.precision, s.recall, s.f1) == (0.0, None, None)


def test_an_alarm_between_another_kinds_onset_and_its_own_is_cross_kind_and_false():
    runs = [run("a", ("divergence", 300), ("plateau", 600))]
    alarms = [alarm("a", "plateau", 100), alarm("a", "plateau", 400), alarm("a", "plateau", 650)]
    s = score_kind("plateau", runs, alarms, tolerance=300)
    assert (s.false_alarms, s.cross_kind, s.detected) == (1, 1, 1)
    assert s.precision == pytest.approx(1 / 3)  # detected / (detected + false + cross-kind)


def test_a_run_counts_at_most_one_false_alarm_per_kind():
    alarms = [alarm("h", "plateau", s) for s in range(10, 900, 1)]  # 890 alarms, every tick
    alarms += [alarm("h", "overfitting", 500)]
    runs = [run("h"), run("p", ("plateau", 500))]
    s = score_kind("plateau", runs, [*alarms, alarm("p", "plateau", 520)], tolerance=300)
    assert (s.false_alarms, s.alarms, s.detected, s.precision) == (1, 891, 1, 0.5)
    assert score_kind("overfitting", runs, alarms, tolerance=300).false_alarms == 1


def test_cross_kind_alarms_count_once_per_run_and_kind_against_precision():
    runs = [
        run("o1", ("overfitting", 300)),
        run("o2", ("overfitting", 300)),
        run("p", ("plateau", 200)),
    ]
    alarms = [alarm("o1", "plateau", s) for s in (400, 500, 600)]
    alarms += [alarm("o2", "plateau", 900), alarm("p", "plateau", 250)]
    s = score_kind("plateau", runs, alarms, tolerance=300)
    assert (s.detected, s.false_alarms, s.cross_kind) == (1, 0, 2)
    assert s.precision == pytest.approx(1 / 3) and s.recall == 1.0


def test_a_sparse_run_detected_two_evals_after_onset_counts_within_three_evals():
    sparse = run("s", ("overfitting", 5000), last_step=20_000, every=1000)
    s = score_kind("overfitting", [sparse], [alarm("s", "overfitting", 7000)], tolerance=300)
    assert (s.detected, s.late) == (1, 0)
    assert (s.latency_median, s.latency_max) == (2000.0, 2000)
    assert (s.latency_evals_median, s.latency_evals_max) == (2.0, 2)
    # four evaluations after onset is past both windows
    late = score_kind("overfitting", [sparse], [alarm("s", "overfitting", 9000)], tolerance=300)
    assert (late.detected, late.late, late.latency_evals_max) == (0, 1, None)
    # with the evaluation window closed only the steps count
    none = score_kind("overfitting", [sparse], [alarm("s", "overfitting", 7000)], tolerance=300,
                      tolerance_evals=0)  # fmt: skip
    assert none.late == 1


def test_a_plateau_window_also_spans_a_quarter_of_the_run():
    """No progress is a matter of time: a detector needs its patience (20 % of a run of known
    length) before it can see it, so a plateau counts up to a quarter of the run late."""
    sparse = run("s", ("plateau", 5000), last_step=20_000, every=1000)
    s = score_kind("plateau", [sparse], [alarm("s", "plateau", 9000)], tolerance=300)
    assert (s.detected, s.late, s.latency_max) == (1, 0, 4000)
    late = score_kind("plateau", [sparse], [alarm("s", "plateau", 10_001)], tolerance=300)
    assert late.late == 1
    assert window_end(sparse, 5000, tolerance=300, tolerance_evals=3, kind="plateau") == 10_000


def test_a_dense_run_keeps_the_step_window_and_counts_its_evaluations():
    dense = run("d", ("divergence", 500), every=10)
    s = score_kind("divergence", [dense], [alarm("d", "divergence", 620)], tolerance=300)
    assert (s.detected, s.latency_max, s.latency_evals_max) == (1, 120, 12)
    late = score_kind("divergence", [dense], [alarm("d", "divergence", 801)], tolerance=300)
    assert late.late == 1  # 31 evaluations is no excuse


def test_the_detection_window_ends_at_the_later_of_steps_and_evaluations():
    sparse = run("s", ("plateau", 5000), last_step=20_000, every=1000)
    assert window_end(sparse, 5000, tolerance=300, tolerance_evals=3) == 8999
    assert window_end(sparse, 5000, tolerance=300, tolerance_evals=0) == 5999
    assert window_end(run("d", every=10), 500, tolerance=300, tolerance_evals=3) == 800
    assert window_end(sparse, 18_500, tolerance=300, tolerance_evals=3) == 20_000  # run's end
    assert window_end(run("u"), 500, tolerance=300, tolerance_evals=3) == 800  # unknown evals


def test_episodes_count_distinct_ids_and_an_alarm_without_one_alone():
    alarms = [alarm("a", "plateau", 600, "e1"), alarm("a", "plateau", 700, "e1"),
              alarm("a", "plateau", 800, "e2"), alarm("b", "plateau", 600, "e1"),
              alarm("b", "plateau", 700), alarm("b", "plateau", 800)]  # fmt: skip
    s = score_kind("plateau", [run("a", ("plateau", 500)), run("b")], alarms, tolerance=300)
    assert (s.episodes, s.alarms) == (5, 6)  # a: e1, e2; b: e1 and two of their own


def test_healthy_runs_count_every_alarm_per_thousand_steps():
    runs = [run("h1", last_step=1000), run("h2", last_step=3000), run("sick", ("plateau", 10))]
    alarms = [alarm("h1", "oscillation", 10), alarm("h2", "plateau", 10),
              alarm("sick", "plateau", 20)]  # fmt: skip
    scores, healthy = score_all(runs, alarms, tolerance=300)
    assert [s.kind for s in scores] == ["plateau", "divergence", "overfitting"]
    assert (healthy.steps, healthy.alarms, healthy.per_1k_steps) == (4000, 2, 0.5)


def test_healthy_runs_alarmed_counts_runs_with_any_alarm_oscillation_included():
    runs = [run("h1"), run("h2"), run("h3"), run("h4"), run("sick", ("plateau", 10))]
    alarms = [alarm("h1", "oscillation", 10), alarm("h1", "plateau", 20),
              *[alarm("h2", "plateau", s) for s in range(100, 900, 10)],
              alarm("sick", "plateau", 20)]  # fmt: skip
    _, healthy = score_all(runs, alarms, tolerance=300)
    assert (healthy.runs, healthy.runs_alarmed, healthy.runs_alarmed_fraction) == (4, 2, 0.5)


def test_no_healthy_runs_gives_no_rate():
    _, healthy = score_all([run("sick", ("plateau", 10))], [], tolerance=300)
    assert healthy.per_1k_steps is None and healthy.runs_alarmed_fraction is None
