"""A loss term that dominates the total (by the ``train/loss/<term>`` convention) is an
``imbalance``: the rules down-weight its ``loss.<term>`` knob; a balanced run, a run without
the convention and a term that is the key metric are left alone."""

from __future__ import annotations

from autopilot.config import Settings
from autopilot.detectors import default_detectors, diagnose
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from autopilot.summary import Windows, summarize
from kernel import KnobSpec
from kernel.metric_names import loss_term_metric

STEPS = [float(s) for s in range(0, 200, 10)]


def _windows(aux: float, ce: float = 1.0, weight: float = 1000.0) -> Windows:
    n = len(STEPS)
    return {
        "train/loss": [STEPS, [ce + weight * aux] * n],
        loss_term_metric("aux"): [STEPS, [aux] * n],
        "val/loss": [STEPS, [2.0 - 0.001 * i for i in range(n)]],
    }


def _found(windows: Windows, weights: dict[str, float], key: str = "val/loss"):
    summary = summarize(windows, {}, step=190, key_metric=key, key_mode="min", loss_weights=weights)
    return diagnose(summary, windows, default_detectors(Settings().detectors))


def test_a_dominating_term_is_an_imbalance_and_is_down_weighted() -> None:
    [found] = [d for d in _found(_windows(aux=0.05), {"aux": 1000.0}) if d.kind == "imbalance"]
    assert found.evidence["knob"] == "loss.aux" and float(found.evidence["share"] or 0) > 0.9
    ctx = PolicyContext(
        step=190,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[found],
        knobs={"loss.aux": KnobSpec(name="loss.aux", kind="float", value=1000.0, lo=0, hi=1e4)},
    )
    actions = RulePolicy().propose(ctx).actions
    assert [(a.knob, a.multiplier) for a in actions] == [("loss.aux", 0.2)]


def test_a_balanced_run_a_run_without_weights_and_the_key_term_are_left_alone() -> None:
    balanced = _windows(aux=0.05, weight=1.0)
    assert not [d for d in _found(balanced, {"aux": 1.0}) if d.kind == "imbalance"]
    assert not [d for d in _found(_windows(aux=0.05), {}) if d.kind == "imbalance"]
    key_term = _found(_windows(aux=0.05), {"aux": 1000.0}, key=loss_term_metric("aux"))
    assert not [d for d in key_term if d.kind == "imbalance"]
