"""The real-log labelling rule, checked on synthetic ``log_history`` lists (no third-party data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from evals.real_logs.label import label_dir, label_log_history


def _history(
    train: list[float], evals: list[float], *, every: int = 10, eval_every: int = 50
) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [
        {"step": (i + 1) * every, "loss": v, "learning_rate": 1e-4} for i, v in enumerate(train)
    ]
    rows += [{"step": (i + 1) * eval_every, "eval_loss": v} for i, v in enumerate(evals)]
    return sorted(rows, key=lambda r: r["step"])


def _decay(n: int, start: float, end: float) -> list[float]:
    return [end + (start - end) * math.exp(-4 * i / n) for i in range(n)]


def test_a_steadily_improving_run_is_healthy() -> None:
    label = label_log_history(_history(_decay(100, 2.0, 0.2), _decay(20, 2.1, 0.4)))
    assert label.label == "healthy"
    assert label.train_points == 100 and label.eval_points == 20 and label.eval_cadence == 50


def test_eval_loss_rising_from_an_early_minimum_while_train_falls_is_overfitting() -> None:
    evals = [2.0, 1.5, 1.2, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5]
    label = label_log_history(_history(_decay(50, 2.0, 0.1), evals))
    assert label.label == "overfitting"
    assert (label.numbers["eval_end_over_min"] or 0.0) >= 0.15
    assert label.numbers["eval_min_step"] == 200


def test_a_minimum_in_the_last_two_evals_is_not_overfitting() -> None:
    evals = [2.0, 1.6, 1.3, 1.1, 1.0, 0.95, 0.9, 0.88, 0.85, 1.4]
    assert label_log_history(_history(_decay(50, 2.0, 0.1), evals)).label != "overfitting"


def test_a_non_finite_loss_is_divergence() -> None:
    train = _decay(50, 2.0, 0.5)
    train[30] = math.nan
    label = label_log_history(_history(train, []))
    assert label.label == "divergence"
    assert label.numbers["first_non_finite_step"] == 310


def test_a_sustained_blow_up_is_divergence_but_a_spike_that_recovers_is_not() -> None:
    train = _decay(60, 2.0, 0.5)
    spiked = train[:20] + [6.0] + train[21:]
    assert label_log_history(_history(spiked, [])).label == "healthy"
    blown = train[:40] + [5.0 + i for i in range(20)]
    assert label_log_history(_history(blown, [])).label == "divergence"


def test_a_near_zero_fine_tune_loss_bumping_is_not_divergence() -> None:
    train = [2.0, 1.0, 0.3] + [0.001] * 40 + [0.04] * 8 + [0.002] * 10
    assert label_log_history(_history(train, [])).label == "healthy"


def test_a_flat_high_loss_over_the_last_40_percent_is_a_plateau() -> None:
    train = _decay(30, 2.0, 1.6) + [1.6] * 30
    evals = [1.8, 1.7, 1.7, 1.7, 1.7, 1.7]
    label = label_log_history(_history(train, evals, eval_every=100))
    assert label.label == "plateau"
    gain = label.numbers["train_gain_tail"]
    assert gain is not None and gain <= 0.01


def test_a_flat_tail_at_a_low_loss_is_healthy() -> None:
    train = _decay(30, 2.0, 0.1) + [0.1] * 30
    assert label_log_history(_history(train, [])).label == "healthy"


def test_label_dir_reads_files_laid_out_as_repo_and_path(tmp_path: Path) -> None:
    state = {"global_step": 500, "log_history": _history(_decay(50, 2.0, 0.2), [])}
    path = tmp_path / "owner" / "repo" / "out" / "trainer_state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(state))
    (row,) = label_dir(tmp_path)
    assert row["repo"] == "owner/repo" and row["path"] == "out/trainer_state.json"
    assert row["label"] == "healthy" and row["steps"] == 500
