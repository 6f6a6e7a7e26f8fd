"""The update-to-weight ratio the kernel measures and records as ``train/update_ratio``
(issue 12): about 1e-3 for a healthy Adam step, orders of magnitude less when the lr does
nothing, never measured across a command that moved the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kernel import Kernel, KernelSettings
from kernel.metrics import METRICS_FILE
from kernel.update_ratio import METRIC, UpdateRatio


def _train(run_dir: Path, lr: float, *, every: int = 5, steps: int = 31) -> list[tuple[int, float]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    settings = KernelSettings(poll_interval_s=0.0, update_ratio_every_steps=every)
    with Kernel(run_dir, optimizer=opt, settings=settings) as kernel:
        for step in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            kernel.log(step, {"train/loss": loss})
            kernel.step(step)
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    return [(r["step"], r["metrics"][METRIC]) for r in rows if METRIC in r["metrics"]]


def test_a_healthy_adam_step_moves_the_weights_by_about_a_thousandth(tmp_path: Path) -> None:
    healthy = _train(tmp_path / "a", 1e-3)
    assert len(healthy) >= 4  # every 5 steps
    assert all(1e-4 < ratio < 1e-2 for _, ratio in healthy), healthy
    idle = _train(tmp_path / "b", 1e-7)
    assert all(ratio < 1e-5 for _, ratio in idle), idle


def test_off_records_nothing(tmp_path: Path) -> None:
    assert _train(tmp_path / "off", 1e-3, every=0) == []


def test_the_ratio_is_over_one_step_and_skips_a_step_without_a_copy() -> None:
    w = torch.nn.Parameter(torch.full((3,), 2.0))
    ratio = UpdateRatio([w], every=2)
    ratio.after_step(1)  # not a multiple of 2: no copy
    assert ratio.before_step(2) is None
    ratio.after_step(2)
    with torch.no_grad():
        w.add_(0.2)  # 10 % of each weight
    measured = ratio.before_step(3)
    assert measured is not None and float(measured) == pytest.approx(0.1)
    assert ratio.before_step(4) is None  # one measurement per copy


def test_a_large_model_is_measured_on_a_budget_of_weights(monkeypatch) -> None:
    from kernel.update_ratio import UpdateRatio

    monkeypatch.setattr(UpdateRatio, "MAX_ELEMENTS", 6)
    big = torch.nn.Parameter(torch.ones(4, 4))
    ratio = UpdateRatio([big], every=1)
    ratio.after_step(0)
    with torch.no_grad():
        big[0, :2] *= 1.1  # inside the first 6 elements measured
        big[3, 3] *= 100.0  # outside: not copied, not compared
    measured = ratio.before_step(1)
    assert measured is not None
    assert float(measured) == pytest.approx((2 * 0.1**2) ** 0.5 / 6**0.5, rel=1e-5)
