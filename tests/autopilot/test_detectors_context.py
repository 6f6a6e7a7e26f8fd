"""The detectors with what they know of the run beyond its window: its planned length, each
metric's cadence, its early level and the lr's peak and largest drop (issue 11).

Each run is a set of seeded synthetic curves. At a chosen step the observer's state is
rebuilt the way ``observe`` folds it (``fold_records`` for the 200-point windows and bests,
``fold_run_stats`` for the early values and peaks), summarised with the run's planned length
and diagnosed by the default detectors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from autopilot.config import DetectorSettings
from autopilot.detectors import Detector, DivergenceDetector, default_detectors, diagnose
from autopilot.detectors._horizon import GRADUAL_DROP, evals_after, patience
from autopilot.diagnoses import Diagnosis
from autopilot.observe import fold_records, fold_run_stats
from autopilot.summary import EARLY_POINTS, RunSummary, summarize
from kernel import MetricRecord
from kernel.metric_names import metric_mode

Curves = dict[str, tuple[np.ndarray, np.ndarray]]
SETTINGS = DetectorSettings()
DETECTORS = default_detectors(SETTINGS)


def records(curves: Curves, upto: int) -> list[MetricRecord]:
    """The curves' points up to ``upto`` as the kernel records them: one record per step."""
    by_step: dict[int, dict[str, float]] = {}
    for name, (steps, values) in curves.items():
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            if step <= upto:
                by_step.setdefault(int(step), {})[name] = float(value)
    return [MetricRecord(step=s, metrics=m) for s, m in sorted(by_step.items())]


def summary_at(
    curves: Curves, step: int, key: str = "val/loss", max_steps: int | None = None
) -> tuple[RunSummary, dict[str, list[list[float]]]]:
    recs = records(curves, step)
    windows, best = fold_records({}, {}, recs, SETTINGS.window)
    early, peak = fold_run_stats({}, {}, recs)
    summary = summarize(
        windows,
        best,
        step=step,
        key_metric=key,
        key_mode=metric_mode(key),
        early=early,
        peak=peak,
        max_steps=max_steps,
    )
    # the graph checkpoints the state as JSON: the summary must survive it
    return RunSummary.model_validate(json.loads(summary.model_dump_json())), windows


def diagnoses_at(
    curves: Curves,
    step: int,
    key: str = "val/loss",
    *,
    max_steps: int | None = None,
    detectors: Sequence[Detector] = DETECTORS,
) -> list[Diagnosis]:
    summary, windows = summary_at(curves, step, key, max_steps)
    return diagnose(summary, windows, detectors)


def kinds_at(
    curves: Curves, steps: range, key: str = "val/loss", *, max_steps: int | None = None
) -> list[list[str]]:
    return [[d.kind for d in diagnoses_at(curves, s, key, max_steps=max_steps)] for s in steps]


# --- patience ----------------------------------------------------------------------------


def test_patience_with_a_known_length_is_a_fraction_of_the_run() -> None:
    assert patience(max_steps=100_000, cadence=1000.0, evals=4, frac=0.2, steps=300) == 20_000
    assert patience(max_steps=250, cadence=25.0, evals=4, frac=0.2, steps=300) == 100


def test_patience_with_a_known_length_is_at_least_the_evaluations_asked_for() -> None:
    assert patience(max_steps=1000, cadence=100.0, evals=4, frac=0.2, steps=300) == 400
    assert patience(max_steps=3, cadence=None, evals=4, frac=0.2, steps=300) == 1


def test_patience_of_a_run_of_unknown_length_is_the_step_count_or_the_evaluations() -> None:
    assert patience(max_steps=None, cadence=10.0, evals=4, frac=0.2, steps=300) == 300
    assert patience(max_steps=None, cadence=None, evals=4, frac=0.2, steps=300) == 300
    assert patience(max_steps=None, cadence=500.0, evals=4, frac=0.2, steps=300) == 2000


def test_evals_after_counts_the_points_after_a_step() -> None:
    steps = np.array([100.0, 200.0, 300.0, 400.0])
    assert evals_after(steps, 200) == 2
    assert evals_after(steps, 50) == 4
    assert evals_after(steps, 400) == 0
    assert evals_after(steps, None) == 0


# --- plateau: the run's length -----------------------------------------------------------

LONG = 100_000
LONG_TRAIN = np.arange(100.0, LONG + 1, 100)
LONG_EVALS = np.arange(1000.0, LONG + 1, 1000)


def long_run(level, seed: int = 0) -> Curves:
    """A 100k-step run, train loss every 100 steps and eval loss every 1000."""
    rng = np.random.default_rng(seed)
    jitter = 1 + 0.001 * (-1.0) ** np.arange(LONG_EVALS.size)  # noise with no trend of its own
    train = (level(LONG_TRAIN) - 0.1) * rng.lognormal(0, 0.05, LONG_TRAIN.size)
    return {"train/loss": (LONG_TRAIN, train), "val/loss": (LONG_EVALS, level(LONG_EVALS) * jitter)}


def slow_fall(t: np.ndarray) -> np.ndarray:
    return 0.6 + 2 * np.exp(-t / 20_000)


def fall_then_flat(t: np.ndarray) -> np.ndarray:
    return 0.6 + 2 * np.exp(-np.minimum(t, 30_000) / 8000)


def test_a_still_falling_eval_loss_of_a_long_run_is_no_plateau() -> None:
    curves = long_run(slow_fall)
    steps = range(60_000, LONG + 1, 10_000)
    assert kinds_at(curves, steps, max_steps=LONG) == [[]] * len(steps)
    # a fixed patience of a few hundred steps would call its last stretch a plateau
    assert "plateau" in kinds_at(curves, range(LONG, LONG + 1))[0]


def test_the_same_long_run_flat_after_step_30000_is_a_plateau() -> None:
    curves = long_run(fall_then_flat)
    found = [diagnoses_at(curves, s, max_steps=LONG) for s in range(60_000, LONG + 1, 10_000)]
    assert [[d.kind for d in f] for f in found] == [["plateau"]] * 5
    assert all(f[0].evidence["patience_steps"] == 20_000 for f in found)  # 20 % of the run


# --- plateau: the lr schedule and the train curve ----------------------------------------

SHORT = 3000
TRAIN = np.arange(10.0, SHORT + 1, 10)
EVALS = np.arange(50.0, SHORT + 1, 50)
TAIL = range(2000, SHORT + 1, 200)


def tail_run(floor: float, lr: np.ndarray | None, seed: int = 0) -> Curves:
    """Losses that come down from ``floor + 2`` to ``floor`` by step ~1500, then stay flat;
    ``lr`` logged every 10 steps when given."""
    rng = np.random.default_rng(seed)
    train = (floor + 2 * np.exp(-TRAIN / 250)) * rng.lognormal(0, 0.01, TRAIN.size)
    val = (floor + 0.05 + 2 * np.exp(-EVALS / 250)) * (1 + 0.002 * rng.standard_normal(EVALS.size))
    curves = {"train/loss": (TRAIN, train), "val/loss": (EVALS, val)}
    if lr is not None:
        curves["lr"] = (TRAIN, lr)
    return curves


LINEAR_DECAY = 1e-3 * (1 - TRAIN / SHORT)
ONE_STEP_COLLAPSE = np.where(TRAIN < 1500, 1e-3, 1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_a_flat_tail_under_a_linear_decay_to_zero_after_the_loss_came_down_is_no_plateau(
    seed: int,
) -> None:
    assert kinds_at(tail_run(0.3, None, seed), TAIL) == [["plateau"]] * len(TAIL)  # no schedule
    assert kinds_at(tail_run(0.3, LINEAR_DECAY, seed), TAIL) == [[]] * len(TAIL)


@pytest.mark.parametrize("seed", range(3))
def test_the_same_tail_after_a_one_step_lr_collapse_is_a_plateau(seed: int) -> None:
    curves = tail_run(0.3, ONE_STEP_COLLAPSE, seed)
    assert kinds_at(curves, TAIL) == [["plateau"]] * len(TAIL)
    lr = summary_at(curves, SHORT)[0].metrics["lr"]
    assert lr.largest_drop is not None and lr.largest_drop > 0.99


def test_a_linear_decay_drops_gradually() -> None:
    lr = summary_at(tail_run(0.3, LINEAR_DECAY), SHORT)[0].metrics["lr"]
    assert lr.peak == pytest.approx(LINEAR_DECAY[0])
    assert lr.largest_drop is not None and lr.largest_drop <= GRADUAL_DROP


@pytest.mark.parametrize("seed", range(3))
def test_a_flat_tail_still_high_over_its_early_level_is_a_plateau_under_annealing(
    seed: int,
) -> None:
    curves = tail_run(4.0, LINEAR_DECAY, seed)  # from about 6 down to 4: over still_high
    found = [diagnoses_at(curves, s) for s in TAIL]
    assert [[d.kind for d in f] for f in found] == [["plateau"]] * len(TAIL)
    level = found[-1][0].evidence["loss_over_early"]
    assert isinstance(level, float) and level >= SETTINGS.plateau_still_high


def flat_val(train_falls: bool, seed: int) -> Curves:
    """``val/loss`` flat from step ~600; ``train/loss`` either still falling or flat too."""
    rng = np.random.default_rng(seed)
    val = (1.0 + np.exp(-np.minimum(EVALS, 600) / 150)) * (
        1 + 0.002 * rng.standard_normal(EVALS.size)
    )
    train = (
        2.0 * np.exp(-TRAIN / 1500) if train_falls else 1.0 + np.exp(-np.minimum(TRAIN, 600) / 150)
    )
    train = train * rng.lognormal(0, 0.01, TRAIN.size)
    return {"train/loss": (TRAIN, train), "val/loss": (EVALS, val)}


@pytest.mark.parametrize("seed", range(3))
def test_a_flat_val_loss_while_the_train_loss_clearly_falls_is_no_plateau(seed: int) -> None:
    steps = range(2400, SHORT + 1, 300)
    assert kinds_at(flat_val(True, seed), steps) == [[]] * len(steps)
    assert kinds_at(flat_val(False, seed), steps) == [["plateau"]] * len(steps)


# --- overfitting on sparse evaluations ---------------------------------------------------

SPARSE = 1500
SPARSE_TRAIN = np.arange(10.0, SPARSE + 1, 10)
SPARSE_EVALS = np.arange(100.0, SPARSE + 1, 100)  # 15 evaluations
MIN_STEP = 700


def sparse_overfit(rise_per_3_evals: float, seed: int) -> Curves:
    """Eval loss down to 1.0 at step 700, then up by ``rise_per_3_evals`` every 3 evals."""
    rng = np.random.default_rng(seed)
    e = SPARSE_EVALS
    down = 1.0 + 1.5 * (1 - e / MIN_STEP) ** 2
    up = 1.0 + rise_per_3_evals * (e - MIN_STEP) / 300
    val = np.where(e <= MIN_STEP, down, up) * (1 + 0.005 * rng.standard_normal(e.size))
    train = (0.2 + 2 * np.exp(-SPARSE_TRAIN / 300)) * rng.lognormal(0, 0.02, SPARSE_TRAIN.size)
    return {"train/loss": (SPARSE_TRAIN, train), "val/loss": (e, val)}


def first_overfitting(curves: Curves, max_steps: int) -> Diagnosis | None:
    for step in range(MIN_STEP, max_steps + 1, 100):
        found = [
            d for d in diagnoses_at(curves, step, max_steps=max_steps) if d.kind == "overfitting"
        ]
        if found:
            return found[0]
    return None


@pytest.mark.parametrize("seed", range(4))
def test_sparse_overfitting_is_found_within_three_evaluations_of_the_minimum(seed: int) -> None:
    found = first_overfitting(sparse_overfit(0.2, seed), SPARSE)
    assert found is not None and found.metric == "val/loss"
    assert MIN_STEP < found.step <= MIN_STEP + 3 * 100
    assert found.evidence["best_step"] == MIN_STEP
    assert found.evidence["moderated_by"] is None


@pytest.mark.parametrize("seed", range(4))
def test_a_sparse_eval_loss_that_keeps_falling_is_no_overfitting(seed: int) -> None:
    curves = sparse_overfit(0.2, seed)
    steps, val = curves["val/loss"]
    curves["val/loss"] = (steps, np.minimum.accumulate(val) * (1 - 0.01 * (steps > MIN_STEP)))
    assert first_overfitting(curves, SPARSE) is None


MOD = 1200
MOD_TRAIN = np.arange(10.0, MOD + 1, 10)
MOD_EVALS = np.arange(100.0, MOD + 1, 100)  # 12 evaluations, the minimum at the 6th


def rising_after_min(rise: float, accuracy: str | None, seed: int) -> Curves:
    """Eval loss down to 1.0 at step 600, then rising linearly: its last three evaluations'
    median is ``rise`` above the minimum. ``accuracy``: ``up`` (still rising all along) or
    ``down`` (falling since the loss's minimum), or none logged."""
    rng = np.random.default_rng(seed)
    down = np.array([2.0, 1.6, 1.3, 1.12, 1.02, 1.0])
    val = np.concatenate([down, 1 + rise * np.linspace(0.2, 1.2, 6)])
    val = val * (1 + 0.003 * rng.standard_normal(MOD_EVALS.size))
    train = (0.2 + 2 * np.exp(-MOD_TRAIN / 300)) * rng.lognormal(0, 0.02, MOD_TRAIN.size)
    curves = {"train/loss": (MOD_TRAIN, train), "val/loss": (MOD_EVALS, val)}
    e = MOD_EVALS
    acc = {
        "up": 0.5 + 0.3 * e / MOD,
        "down": np.where(e <= 600, 0.5 + 0.3 * e / 600, 0.8 - 0.1 * (e - 600) / 600),
    }
    if accuracy is not None:
        noise = 0.003 * rng.standard_normal(e.size)
        curves["val/accuracy"] = (e, acc[accuracy] + noise)
    return curves


def overfitting_at_end(curves: Curves) -> list[Diagnosis]:
    return [d for d in diagnoses_at(curves, MOD, max_steps=MOD) if d.kind == "overfitting"]


@pytest.mark.parametrize("seed", range(4))
def test_a_rise_of_some_ten_percent_is_overfitting_unless_val_accuracy_still_rises(
    seed: int,
) -> None:
    [plain] = overfitting_at_end(rising_after_min(0.12, None, seed))
    assert plain.evidence["moderated_by"] is None
    assert plain.evidence["overfit_rel"] == SETTINGS.overfit_rel
    [falling_acc] = overfitting_at_end(rising_after_min(0.12, "down", seed))
    assert falling_acc.evidence["moderated_by"] is None
    assert overfitting_at_end(rising_after_min(0.10, "up", seed)) == []
    assert overfitting_at_end(rising_after_min(0.12, "up", seed)) == []


@pytest.mark.parametrize("seed", range(4))
def test_a_rise_of_twenty_percent_is_overfitting_moderated_by_the_rising_accuracy(
    seed: int,
) -> None:
    [found] = overfitting_at_end(rising_after_min(0.2, "up", seed))
    assert found.evidence["moderated_by"] == "val/accuracy"
    assert found.evidence["overfit_rel"] == SETTINGS.overfit_rel_improving
    worse = found.evidence["worse_rel"]
    assert isinstance(worse, float) and worse >= SETTINGS.overfit_rel_improving
    assert "val/accuracy still sets bests" in found.message


# --- divergence on the loss's own scale --------------------------------------------------

FT = np.arange(5.0, 1001, 5)


def fine_tune(bump: float, seed: int, start: int = 600, stop: int = 650) -> Curves:
    """A fine-tune's train loss: about 2 for its first points, then ~0.001, at ``bump`` over
    steps (start, stop]."""
    rng = np.random.default_rng(seed)
    loss = 0.001 * rng.lognormal(0, 0.1, FT.size)
    loss[:5] = [2.1, 2.0, 1.9, 0.8, 0.1]
    steps = FT
    loss = np.where((steps > start) & (steps <= stop), bump, loss)
    return {"train/loss": (FT, loss)}


def divergence_at(curves: Curves, step: int, detector: DivergenceDetector) -> list[Diagnosis]:
    found = diagnoses_at(curves, step, "train/loss", detectors=[detector])
    return [d for d in found if d.kind == "divergence"]


@pytest.mark.parametrize("seed", range(4))
def test_sustained_bumps_of_a_near_zero_fine_tune_loss_are_no_divergence(seed: int) -> None:
    curves = fine_tune(0.04, seed)  # x40 its level, but 2 % of where the loss started
    assert summary_at(curves, 650, "train/loss")[0].metrics["train/loss"].early == 2.0
    assert divergence_at(curves, 650, DivergenceDetector()) == []
    # the ratio alone would call it one: the early level is what holds it back
    assert divergence_at(curves, 650, DivergenceDetector(scale_rel=0.0)) != []


@pytest.mark.parametrize("seed", range(4))
def test_a_jump_to_three_times_the_early_level_is_divergence(seed: int) -> None:
    [found] = divergence_at(fine_tune(6.0, seed), 650, DivergenceDetector())
    assert found.metric == "train/loss"
    assert found.evidence["level"] == pytest.approx(6.0)


def test_a_train_loss_jump_needs_five_sustained_points() -> None:
    curves = fine_tune(6.0, 0)
    assert divergence_at(curves, 620, DivergenceDetector()) == []  # 4 points up
    assert divergence_at(curves, 625, DivergenceDetector()) != []  # 5 points up


def test_a_sparse_train_loss_jump_needs_five_sustained_points_too() -> None:
    steps = np.arange(50.0, 3001, 50)
    loss = 0.3 + 2 * np.exp(-steps / 300)
    loss[-5:] = 3 * 2.3  # the last five points, logged 50 steps apart
    curves = {"train/loss": (steps, loss)}
    detector = DivergenceDetector()
    assert divergence_at(curves, 2850, detector) == []  # 3 points up
    assert divergence_at(curves, 2900, detector) == []  # 4
    assert divergence_at(curves, 3000, detector) != []  # 5


# --- the run-long statistics -------------------------------------------------------------


def lr_records(*points: tuple[int, float]) -> list[MetricRecord]:
    return [MetricRecord(step=s, metrics={"lr": v}) for s, v in points]


def test_fold_run_stats_keeps_the_peak_its_step_the_last_value_and_the_largest_drop() -> None:
    recs = lr_records((1, 1.0), (2, 3.0), (3, 2.7), (4, float("nan")), (5, 0.3))
    early, peak = fold_run_stats({}, {}, recs)
    assert early == {"lr": [1.0, 3.0, 2.7, 0.3]}  # non-finite values are skipped
    largest, at, last, drop = peak["lr"]
    assert (largest, at, last) == (3.0, 2, 0.3)
    assert drop == pytest.approx((2.7 - 0.3) / 3.0)  # the drop across the skipped nan


def test_fold_run_stats_folds_incrementally_and_leaves_its_inputs_alone() -> None:
    recs = lr_records(*[(s, float(v)) for s, v in enumerate([1, 4, 4, 3, 2, 5, 1, 1], start=1)])
    whole = fold_run_stats({}, {}, recs)
    early, peak = fold_run_stats({}, {}, recs[:3])
    before = (json.dumps(early), json.dumps(peak))
    assert fold_run_stats(early, peak, recs[3:]) == whole
    assert (json.dumps(early), json.dumps(peak)) == before
    assert len(whole[0]["lr"]) == EARLY_POINTS
    assert whole[1]["lr"] == [5.0, 6, 1.0, pytest.approx(4 / 5)]


def test_fold_run_stats_reads_an_older_two_value_peak() -> None:
    _, peak = fold_run_stats({}, {"lr": [2.0, 10]}, lr_records((11, 1.0)))
    assert peak["lr"][:3] == [2.0, 10, 1.0]


def test_the_summary_reads_the_early_level_and_the_peak() -> None:
    recs = lr_records((1, 1.0), (2, 3.0), (3, 2.0), (4, 0.5), (5, 0.4))
    windows, best = fold_records({}, {}, recs, 200)
    early, peak = fold_run_stats({}, {}, recs)
    summary = summarize(
        windows, best, step=5, key_metric="lr", key_mode="min", early=early, peak=peak, max_steps=20
    )
    lr = summary.metrics["lr"]
    assert (lr.early, lr.peak, lr.cadence) == (2.0, 3.0, 1.0)  # early: median of the first 3
    assert lr.largest_drop == pytest.approx(0.5)
    assert summary.progress == pytest.approx(0.25)
