"""A small training run for the snapshot and rewind tests: an MLP with BatchNorm, Adam and a
step LR schedule under a ``Kernel``, trained one step at a time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kernel import Kernel, KernelSettings


class Run:
    """A model, its optimizer and scheduler, a loss weight, and the kernel over them."""

    def __init__(self, run_dir: Path, **settings: Any) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 2),
        )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=4, gamma=0.5)
        self.weights = {"aux": 0.5}
        self.step_no = 0
        self.kernel = Kernel(
            run_dir,
            optimizer=self.opt,
            scheduler=self.sched,
            model=self.model,
            loss_weights=self.weights,
            key_metric="train/loss",
            grad_clip=1.0,
            settings=KernelSettings(poll_interval_s=0.0, **settings),
        )

    def train(self, steps: int, metrics: Mapping[str, float] | None = None) -> None:
        """``steps`` more steps; ``metrics`` are logged in place of the loss when given."""
        for _ in range(steps):
            out = self.model(torch.randn(16, 4))
            loss = out.pow(2).mean() + self.weights["aux"] * out.abs().mean()
            loss.backward()
            self.kernel.clip_grad_norm_(self.model.parameters())
            self.opt.step()
            self.opt.zero_grad()
            self.sched.step()
            self.kernel.log(self.step_no, metrics or {"train/loss": loss.item()})
            self.kernel.step(self.step_no)
            self.step_no += 1

    def close(self) -> None:
        self.kernel.close()
