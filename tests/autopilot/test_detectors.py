"""The detectors on synthetic but realistic runs.

A run is a set of curves: a per-batch ``train/loss`` every step with multiplicative SGD
noise, ``val/loss`` and ``val/acc`` every 20 steps, ``lr`` and a spiky ``grad/norm`` every
step. At a chosen step the graph's state is rebuilt exactly as the observer keeps it (the
last 200 points per metric, the run's best) and summarised, then diagnosed. Healthy runs are
checked at many steps over many seeds: a false alarm is the failure that matters most.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from autopilot.config import DetectorSettings
from autopilot.detectors import (
    PRIORITY,
    DivergenceDetector,
    ImbalanceDetector,
    OscillationDetector,
    OverfittingDetector,
    PlateauDetector,
    default_detectors,
    diagnose,
)
from autopilot.diagnoses import Diagnosis, DiagnosisKind, Severity
from autopilot.errors import ConfigError
from autopilot.summary import RunSummary, summarize
from kernel.metric_names import metric_mode

Curves = dict[str, tuple[np.ndarray, np.ndarray]]
SETTINGS = DetectorSettings()
DETECTORS = default_detectors(SETTINGS)
STEPS = 3000


def run(
    seed: int, *, sigma: float = 0.2, train_every: int = 1, tau: float = 1500.0, val: bool = True
) -> Curves:
    """A healthy run: losses decline as ``floor + 2 exp(-t / tau)``."""
    rng = np.random.default_rng(seed)
    dense = np.arange(1.0, STEPS + 1)
    train = np.arange(float(train_every), STEPS + 1, train_every)
    sgd_noise = rng.lognormal(-(sigma**2) / 2, sigma, train.size)
    grad = rng.lognormal(0, 0.3, dense.size) * np.where(rng.random(dense.size) < 0.005, 20, 1)
    curves = {
        "train/loss": (train, (0.3 + 2 * np.exp(-train / tau)) * sgd_noise),
        "lr": (dense, np.full(dense.size, 1e-3)),
        "grad/norm": (dense, grad),
    }
    if val:
        evals = np.arange(20.0, STEPS + 1, 20)
        eval_noise = 1 + 0.01 * rng.standard_normal(evals.size)
        curves["val/loss"] = (evals, (0.35 + 2 * np.exp(-evals / tau)) * eval_noise)
        acc = 0.9 - 0.8 * np.exp(-evals / tau) + 0.005 * rng.standard_normal(evals.size)
        curves["val/acc"] = (evals, acc)
    return curves


def altered(curves: Curves, name: str, change) -> Curves:
    """``curves`` with ``name``'s values replaced by ``change(steps, values)``."""
    steps, values = curves[name]
    return {**curves, name: (steps, change(steps, values.copy()))}


def state_at(curves: Curves, step: int, window: int = 200) -> tuple[dict, dict]:
    """The observer's ``windows`` and ``best`` at ``step``."""
    windows, best = {}, {}
    for name, (steps, values) in curves.items():
        seen = steps <= step
        s, v = steps[seen], values[seen]
        windows[name] = [s[-window:].tolist(), v[-window:].tolist()]
        ok = np.isfinite(v)
        if ok.any():
            pick = np.argmin if metric_mode(name) == "min" else np.argmax
            i = int(pick(v[ok]))
            best[name] = [float(v[ok][i]), float(s[ok][i])]
    return windows, best


def diagnoses_at(
    curves: Curves, step: int, key: str = "val/loss", detectors=DETECTORS
) -> list[Diagnosis]:
    windows, best = state_at(curves, step)
    summary = summarize(
        windows, best, step=step, key_metric=key, key_mode=metric_mode(key), min_points=5
    )
    revived = RunSummary.model_validate(json.loads(summary.model_dump_json()))
    return diagnose(revived, windows, detectors)


def first(curves: Curves, kind: str, steps: range, key: str = "val/loss") -> Diagnosis | None:
    """The first diagnosis of ``kind`` over ``steps``."""
    for step in steps:
        found = [d for d in diagnoses_at(curves, step, key) if d.kind == kind]
        if found:
            return found[0]
    return None


def evidence(diagnosis: Diagnosis, key: str) -> float:
    """A number of ``diagnosis``'s evidence."""
    value = diagnosis.evidence[key]
    assert isinstance(value, int | float), f"{key} is {value!r}"
    return float(value)


def assert_json(diagnosis: Diagnosis) -> None:
    json.dumps(diagnosis.model_dump(mode="json"), allow_nan=False)


HEALTHY = {
    "val key, moderate SGD noise": ({}, "val/loss"),
    "val key, heavy SGD noise": ({"sigma": 0.5}, "val/loss"),
    "accuracy key": ({}, "val/acc"),
    "train key, no validation": ({"val": False, "sigma": 0.3}, "train/loss"),
    "train loss logged every 20 steps": ({"val": False, "train_every": 20}, "train/loss"),
}


@pytest.mark.parametrize(("kw", "key"), HEALTHY.values(), ids=HEALTHY.keys())
def test_healthy_runs_get_no_diagnosis_at_any_step(kw, key):
    alarms = [
        f"seed {seed}: {d.message}"
        for seed in range(6)
        for step in range(50, STEPS + 1, 50)
        for d in diagnoses_at(run(seed, **kw), step, key)
    ]
    assert alarms == []


def test_plateau_fires_after_the_key_metric_stops_improving():
    curves = run(0, tau=200.0)  # converged (under 1% per 300 steps) by about step 1400
    assert first(curves, "plateau", range(300, 1200, 20)) is None
    found = first(curves, "plateau", range(1200, STEPS, 20))
    assert found is not None and found.metric == "val/loss"
    assert evidence(found, "projected_gain") < SETTINGS.plateau_rel


def test_a_metric_creeping_to_new_bests_by_crumbs_is_a_plateau():
    """A collapsed learning rate: every evaluation is a new best, by a millionth."""
    creeping = altered(run(0), "val/loss", lambda s, v: np.where(s < 600, v, 0.5 - 1e-6 * s))
    found = first(creeping, "plateau", range(600, 1200, 20))
    assert found is not None and evidence(found, "steps_since_best") < 20
    assert found.step >= 600 + SETTINGS.plateau_patience_steps


def test_the_plateau_message_counts_the_steps_since_the_last_meaningful_best():
    """The crumbs since step 600 are new bests, but not progress: the message must not say
    "has not improved for 0 steps" when the detector fired after a 300-step patience."""
    creeping = altered(run(0), "val/loss", lambda s, v: np.where(s < 600, v, 0.5 - 1e-6 * s))
    found = first(creeping, "plateau", range(600, 1200, 20))
    assert found is not None
    since = found.step - 600  # the drop to 0.5 at step 600 was the last real progress
    assert found.evidence["steps_since_progress"] == since >= SETTINGS.plateau_patience_steps
    assert f"for {since} steps" in found.message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: PlateauDetector(patience_steps=5),
            "patience_steps must be an integer >= 10, got 5",
        ),
        (
            lambda: PlateauDetector(patience_steps=300.0),  # type: ignore[arg-type]
            "must be an integer >= 10, got 300.0",
        ),
        (lambda: PlateauDetector(progress_rel=-0.1), "progress_rel must be >= 0.0, got -0.1"),
        (lambda: PlateauDetector(min_points=2), "min_points must be an integer >= 3, got 2"),
        (lambda: DivergenceDetector(factor=1.0), "factor must be > 1.0, got 1.0"),
        (lambda: DivergenceDetector(factor=float("nan")), "factor must be > 1.0, got nan"),
        (lambda: DivergenceDetector(grad_explosion_factor=0.5), "grad_explosion_factor must be"),
        (lambda: OverfittingDetector(worse_rel=-1), "worse_rel must be >= 0.0, got -1"),
        (lambda: OverfittingDetector(patience_steps=True), "must be an integer >= 10, got True"),
        (lambda: OscillationDetector(volatility=0), "volatility must be > 0.0, got 0"),
        (
            lambda: OscillationDetector(volatility="high"),  # type: ignore[arg-type]
            "volatility must be > 0.0, got 'high'",
        ),
    ],
)
def test_detector_parameters_are_checked_in_their_constructors(make, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make()


def test_a_detector_uses_the_parameters_it_was_built_with():
    flat = altered(run(0), "val/loss", lambda s, v: np.full(v.size, 0.5))
    impatient = [PlateauDetector(patience_steps=100)]
    assert [d.kind for d in diagnoses_at(flat, 160, detectors=impatient)] == ["plateau"]
    assert diagnoses_at(flat, 160) == []  # the default waits for 250 steps


def test_the_default_detectors_follow_the_config():
    settings = DetectorSettings(
        plateau_patience_steps=120, oscillation_volatility=0.3, imbalance_share=0.7
    )
    divergence, oscillation, overfitting, imbalance, plateau = default_detectors(settings)
    assert isinstance(imbalance, ImbalanceDetector) and imbalance.share == 0.7
    assert isinstance(plateau, PlateauDetector) and plateau.patience_steps == 120
    assert isinstance(oscillation, OscillationDetector) and oscillation.volatility == 0.3
    assert isinstance(divergence, DivergenceDetector) and divergence.factor == 2.0
    assert isinstance(overfitting, OverfittingDetector) and overfitting.worse_rel == 0.08


def test_no_plateau_before_a_patience_window_of_history():
    flat = altered(run(0), "val/loss", lambda s, v: np.full(v.size, 0.5))
    flat = altered(flat, "train/loss", lambda s, v: np.full(v.size, 0.4))  # learning nothing
    assert first(flat, "plateau", range(20, 250, 20)) is None
    assert first(flat, "plateau", range(250, 350, 20)) is not None


def test_nan_loss_is_a_high_severity_divergence_at_once():
    curves = altered(run(0), "train/loss", lambda s, v: np.where(s >= 1500, np.nan, v))
    found = first(curves, "divergence", range(1490, 1510))
    assert found is not None and found.step == 1500 and found.severity == "high"
    assert found.metric == "train/loss"
    assert_json(found)


@pytest.mark.parametrize("seed", range(4))
def test_a_sustained_loss_jump_fires_within_a_few_steps(seed):
    curves = altered(run(seed), "train/loss", lambda s, v: np.where(s >= 1500, 3 * v, v))
    found = first(curves, "divergence", range(1450, 1530))
    assert found is not None and found.metric == "train/loss"
    assert 1500 <= found.step <= 1515
    assert_json(found)


def test_a_single_loss_spike_is_not_a_divergence():
    curves = altered(run(0), "train/loss", lambda s, v: np.where(s == 1500, 20 * v, v))
    assert first(curves, "divergence", range(1495, 1530)) is None


def test_a_jump_of_a_sparse_validation_loss_fires_after_three_evaluations():
    curves = altered(run(0), "val/loss", lambda s, v: np.where(s >= 1500, 3 * v, v))
    del curves["train/loss"]  # a run that logs only validation losses
    found = first(curves, "divergence", range(1400, 1600, 20))
    assert found is not None and found.metric == "val/loss" and found.step == 1540


def test_a_collapse_of_an_accuracy_key_metric_is_a_divergence():
    curves = altered(run(0), "val/acc", lambda s, v: np.where(s >= 1500, 0.1, v))
    found = first(curves, "divergence", range(1400, 1600, 20), key="val/acc")
    assert found is not None and found.metric == "val/acc" and found.step == 1540


def test_a_rising_loss_component_is_no_divergence_while_the_total_falls():
    steps = np.arange(1.0, STEPS + 1)
    curves = {**run(0), "train/loss_kl": (steps, 0.01 + 0.0001 * steps)}
    assert first(curves, "divergence", range(100, STEPS, 100)) is None


def test_a_gradient_norm_explosion_fires_within_a_few_steps():
    curves = altered(run(0), "grad/norm", lambda s, v: np.where(s >= 1500, 50 * v, v))
    found = first(curves, "divergence", range(1490, 1520))
    assert found is not None and found.metric == "grad/norm" and found.step <= 1503
    assert evidence(found, "ratio") > SETTINGS.grad_explosion_factor


def test_mixed_precision_overflow_steps_are_tolerated_but_a_long_run_of_them_is_not():
    def overflow(steps: int):
        return lambda s, v: np.where((s >= 1500) & (s < 1500 + steps), np.inf, v)

    assert first(altered(run(0), "grad/norm", overflow(6)), "divergence", range(1500, 1520)) is None
    found = first(altered(run(0), "grad/norm", overflow(30)), "divergence", range(1500, 1530))
    assert found is not None and found.severity == "high" and found.step == 1509


def overfitting_run(seed: int, *, train_rises: bool = False) -> Curves:
    curves = run(seed, tau=400.0)
    curves = altered(curves, "val/loss", lambda s, v: v + 0.0003 * np.maximum(0, s - 1000))
    if train_rises:
        curves = altered(curves, "train/loss", lambda s, v: v + 0.0004 * np.maximum(0, s - 1000))
    return curves


@pytest.mark.parametrize("seed", range(3))
def test_overfitting_fires_when_validation_turns_up_while_train_falls(seed):
    curves = overfitting_run(seed)
    assert first(curves, "overfitting", range(900, 1200, 20)) is None
    found = first(curves, "overfitting", range(1200, 2000, 20))
    assert found is not None and found.metric == "val/loss"
    assert found.evidence["train"] == "train/loss"
    assert evidence(found, "worse_rel") >= SETTINGS.overfit_rel
    assert_json(found)


def test_train_and_validation_worsening_together_is_not_overfitting():
    assert first(overfitting_run(0, train_rises=True), "overfitting", range(1200, 2000, 20)) is None


def oscillating(seed: int, *, amplitude: float, period: float, sigma: float = 0.1) -> Curves:
    """From step 1000 the train loss swings around a flat level (a learning rate too high)."""
    rng = np.random.default_rng(seed + 100)

    def swing(s: np.ndarray, v: np.ndarray) -> np.ndarray:
        noisy = rng.lognormal(0, sigma, s.size) * np.exp(amplitude * np.sin(2 * np.pi * s / period))
        return np.where(s >= 1000, noisy, v)

    return altered(run(seed), "train/loss", swing)


@pytest.mark.parametrize(("seed", "period"), [(0, 40), (1, 100), (2, 60)])
def test_an_oscillating_train_loss_is_diagnosed(seed, period):
    found = first(
        oscillating(seed, amplitude=0.4, period=period), "oscillation", range(1000, 1400, 10)
    )
    assert found is not None and found.metric == "train/loss"
    assert evidence(found, "volatility") > SETTINGS.oscillation_volatility
    assert_json(found)


def test_heavy_noise_on_an_improving_train_loss_is_not_oscillation():
    for seed in range(6):
        curves = run(seed, sigma=0.6, val=False)
        assert first(curves, "oscillation", range(100, STEPS, 50), key="train/loss") is None


def test_a_sparse_validation_key_metric_that_swings_is_diagnosed():
    def swing(s: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.where(s >= 1000, 0.5 * np.exp(0.35 * np.sin(s * np.pi / 40)), v)

    found = first(altered(run(0), "val/loss", swing), "oscillation", range(1000, 2000, 20))
    assert found is not None and found.metric == "val/loss"


class Scripted:
    """A detector that reports what it is given (to test how ``diagnose`` combines)."""

    def __init__(self, name: str, found: list[tuple[DiagnosisKind, Severity]]) -> None:
        self.name, self.found = name, found

    def detect(self, summary, windows):
        return [
            Diagnosis(kind=kind, metric=f"m{i}", step=summary.step, severity=severity, message=kind)
            for i, (kind, severity) in enumerate(self.found)
        ]


def test_diagnose_keeps_the_most_severe_per_kind_in_priority_order():
    summary = RunSummary(step=10, key_metric="val/loss", key_mode="min")
    detectors = [
        Scripted("a", [("plateau", "low"), ("overfitting", "medium"), ("plateau", "medium")]),
        Scripted("b", [("divergence", "medium"), ("divergence", "medium")]),
        Scripted("c", [("oscillation", "high"), ("overfitting", "medium")]),
    ]
    found = diagnose(summary, {}, detectors)
    assert [d.kind for d in found] == [k for k in PRIORITY if k != "imbalance"]
    assert [(d.metric, d.severity) for d in found] == [
        ("m0", "medium"),
        ("m0", "high"),
        ("m1", "medium"),
        ("m2", "medium"),
    ]
