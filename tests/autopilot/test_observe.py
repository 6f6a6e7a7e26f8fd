"""The observer: metric records folded into columnar windows and run bests."""

from __future__ import annotations

import math

from autopilot.observe import fold_records
from kernel import MetricRecord


def records(*rows: tuple[int, dict[str, float]]) -> list[MetricRecord]:
    return [MetricRecord(step=step, metrics=metrics) for step, metrics in rows]


def test_windows_are_steps_and_values_keeping_the_latest_points():
    new = records(*((s, {"loss": 10.0 - s, "val/acc": s / 10}) for s in range(1, 6)))
    windows, best = fold_records({}, {}, new, window=3)
    assert windows["loss"] == [[3, 4, 5], [7.0, 6.0, 5.0]]
    assert windows["val/acc"] == [[3, 4, 5], [0.3, 0.4, 0.5]]
    assert best == {"loss": [5.0, 5], "val/acc": [0.5, 5]}


def test_the_inputs_are_not_changed():
    windows: dict[str, list[list[float]]] = {"loss": [[1], [2.0]]}
    best: dict[str, list[float]] = {"loss": [2.0, 1]}
    fold_records(windows, best, records((2, {"loss": 1.0})), window=10)
    assert windows == {"loss": [[1], [2.0]]} and best == {"loss": [2.0, 1]}


def test_non_finite_values_stay_in_the_window_but_never_become_the_best():
    windows, best = fold_records({}, {}, records((1, {"loss": 2.0}), (2, {"loss": math.nan})), 10)
    assert windows["loss"][0] == [1, 2] and math.isnan(windows["loss"][1][1])
    assert best == {"loss": [2.0, 1]}


def test_a_window_of_step_value_pairs_from_an_older_checkpoint_starts_again():
    old = {"loss": [[s, 1.0] for s in range(5)]}
    windows, _ = fold_records(old, {}, records((9, {"loss": 0.5})), window=10)
    assert windows == {"loss": [[9], [0.5]]}
