"""A user's training function for ``autopilot.launch``: a tiny regression under a Kernel,
paced so that a test can steer it while it runs."""

from __future__ import annotations

import time

import torch

from kernel import Kernel, KernelSettings

PACE_S = 0.01


def train(run_dir: str, max_steps: int | None) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    settings = KernelSettings(poll_interval_s=0.0, flush_interval_s=0.0)
    steps = max_steps or 10_000
    with Kernel(
        run_dir,
        optimizer=opt,
        model=model,
        key_metric="train/loss",
        settings=settings,
        max_steps=steps,
    ) as kernel:
        for step in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            kernel.log(step, {"train/loss": loss.item()})
            kernel.step(step)
            if kernel.should_stop:
                break
            time.sleep(PACE_S)


def broken(run_dir: str, max_steps: int | None) -> None:
    raise RuntimeError("the user's code fails before training")
