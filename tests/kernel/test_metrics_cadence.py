"""The metrics logging cadence: every N steps or at most R records a second, with
non-finite values and evaluation metrics always kept."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import FAST

from kernel import Kernel
from kernel.metrics import METRICS_FILE, MetricRecord, MetricsWriter


def _steps(run_dir) -> list[int]:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [MetricRecord.model_validate_json(line).step for line in lines]


def test_every_n_steps_keeps_nonfinite_values_and_evaluation_metrics(run_dir):
    run_dir.mkdir()
    writer = MetricsWriter(run_dir, every=10)
    for step in range(100):
        loss = float("nan") if step == 37 else 1.0 / (step + 1)
        metrics = {"train/loss": loss, "lr": 0.1}
        if step == 55:
            metrics["val/loss"] = 0.5
        writer.add(step, float(step), metrics)
    writer.flush()
    assert _steps(run_dir) == sorted([*range(0, 100, 10), 37, 55])


def test_a_rate_cap_keeps_at_most_that_many_records_a_second(run_dir):
    run_dir.mkdir()
    writer = MetricsWriter(run_dir, max_per_s=0.25)
    for step in range(40):
        writer.add(step, float(step), {"train/loss": 1.0})  # one step a second
    writer.add(41, 41.0, {"eval_accuracy": 0.9})
    writer.flush()
    assert _steps(run_dir) == [*range(0, 40, 4), 41]


@pytest.mark.parametrize("kw", [{"every": 0}, {"max_per_s": -1.0}, {"max_per_s": float("nan")}])
def test_a_cadence_is_validated(run_dir, kw):
    with pytest.raises(ValueError, match="must be"):
        MetricsWriter(run_dir, **kw)


def test_the_kernel_takes_its_cadence_from_its_settings(run_dir):
    settings = dataclasses.replace(FAST, metrics_every=5, reflex_action="off")  # inf: no rewind
    with Kernel(run_dir, settings=settings) as kernel:
        for step in range(20):
            kernel.log(step, {"train/loss": float("inf") if step == 7 else 1.0})
            kernel.step(step)
    assert _steps(run_dir) == [0, 5, 7, 10, 15]
