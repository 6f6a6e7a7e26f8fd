"""A user's training loop with a bug that kills its network: a ReLU MLP on digits whose own
code multiplies Adam's lr by 300 once, as a buggy schedule would (the reflex tests)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kernel import Kernel, KernelSettings

SPIKE_STEP = 120


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16, torch.tensor(data.target)


class SpikedLoop:
    """A user's loop: a ReLU MLP on digits whose own code multiplies Adam's lr by 300 once,
    at ``spike`` (before that step's update), as a buggy schedule would."""

    def __init__(self, run_dir: Path, *, spike: int | None = SPIKE_STEP, **settings: Any) -> None:
        torch.manual_seed(0)
        self.x, self.y = _digits()
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.gen = torch.Generator().manual_seed(0)
        self.spike = spike
        base = {"poll_interval_s": 0.0, "snapshot_every_steps": 50, "snapshot_on_best": False}
        self.kernel = Kernel(
            run_dir,
            optimizer=self.opt,
            model=self.model,
            key_metric="train/loss",
            settings=KernelSettings(**{**base, **settings}),
        )
        self.losses: dict[int, float] = {}
        self.after_step: dict[int, list[torch.Tensor]] = {}

    def train(
        self,
        steps: int,
        *,
        nan_at: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        for step in range(1, steps + 1):
            idx = torch.randint(len(self.x), (64,), generator=self.gen)
            loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            if step == self.spike:
                for group in self.opt.param_groups:
                    group["lr"] *= 300
            self.opt.step()
            value = math.nan if step == nan_at else loss.item()
            self.losses[step] = value
            self.kernel.log(step, {"train/loss": value})
            self.kernel.step(step)
            self.after_step[step] = [p.detach().clone() for p in self.model.parameters()]
            if on_step is not None:
                on_step(step)
        self.kernel.close()

    def full_loss(self) -> float:
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(self.model(self.x), self.y).item()
