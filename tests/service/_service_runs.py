"""What the service tests share: real training loops under a real ``Kernel`` (a tiny torch
model, in a thread), the token, and a poller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from autopilot.service import Token
from kernel import Kernel, KernelSettings, read_kernel_state

T = TypeVar("T")

TOKEN = Token(value="test-token-0123456789abcdef", source="the tests")
AUTH = {"Authorization": f"Bearer {TOKEN.value}"}
FAST = KernelSettings(poll_interval_s=0.0, flush_interval_s=0.0, heartbeat_interval_s=0.0)


class Training:
    """A tiny regression trained under a ``Kernel`` in a thread, until ``stop()`` or
    ``steps``; each step logs ``train/loss`` (and ``val/loss`` every 10)."""

    def __init__(self, run_dir: Path, *, steps: int | None = None, pace_s: float = 0.002) -> None:
        self.run_dir, self.steps, self.pace_s = run_dir, steps, pace_s
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.kernel = Kernel(run_dir, optimizer=self.opt, settings=FAST, key_metric="val/loss")
        self.step = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._train, daemon=True)
        self._thread.start()

    def _train(self) -> None:
        x, y = torch.randn(64, 4), torch.randn(64, 1)
        with self.kernel:
            while not self._stop.is_set() and (self.steps is None or self.step + 1 < self.steps):
                step = self.step + 1
                loss = torch.nn.functional.mse_loss(self.model(x), y)
                loss.backward()
                self.opt.step()
                self.opt.zero_grad()
                metrics = {"train/loss": loss.item()}
                if step % 10 == 0:
                    metrics["val/loss"] = loss.item() * 1.1
                self.kernel.log(step, metrics)
                self.kernel.step(step)
                self.step = step
                if self.kernel.should_stop:
                    break
                self._stop.wait(self.pace_s)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def join(self) -> None:
        self._thread.join(60)


def poll(predicate: Callable[[], T | None], *, timeout: float = 20.0, what: str = "it") -> T:
    """The first truthy value of ``predicate()``; fails after ``timeout`` (a safety net)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.005)


def last_step(run_dir: Path) -> int | None:
    """The last step ``kernel.json`` shows."""
    state = read_kernel_state(run_dir)
    return None if state is None else state.last_step
