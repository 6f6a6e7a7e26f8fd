"""The demo's training process: a small MLP on scikit-learn's bundled digits, under the kernel.

Adam starts at a good learning rate (0.003). With ``--spike-step N --spike-lr X`` the
learning-rate schedule has a bug: from step N on it multiplies the rate up to X, and the run
diverges unless something lowers it. ``autopilot demo`` lets the autopilot rescue it live.
The run is seeded and paced (``--pace`` seconds per step) so a person can watch it.

Run alone: ``python -m autopilot.cli.demo_train --dir runs/x --spike-lr 0.1``, and beside it
``autopilot --dir runs/x watch --mode auto``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import torch
from torch import nn

from kernel import Kernel

EVAL_EVERY = 20
KEY_METRIC = "val/loss"
DEFAULT_LR = 0.003
SPIKE_STEP = 150
SPIKE_LR = 0.1


@dataclass(frozen=True, kw_only=True)
class Digits:
    """The digits split into tensors: 1437 training and 360 validation images."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits_split(seed: int) -> Digits:
    """scikit-learn's 8x8 digits (bundled, no download), scaled to [0, 1], split by ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:360], perm[360:]
    return Digits(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val])


class Batches:
    """Endless seeded mini-batches: a fresh permutation every epoch."""

    def __init__(self, data: Digits, batch_size: int, seed: int) -> None:
        self.data, self.batch_size = data, batch_size
        self._gen = torch.Generator().manual_seed(seed + 1)
        self._order, self._pos = torch.empty(0, dtype=torch.long), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(images, labels)`` batch."""
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.data.x_train), generator=self._gen)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.data.x_train[idx], self.data.y_train[idx]


def loss_fn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, weights: MutableMapping[str, float]
) -> torch.Tensor:
    """Cross-entropy plus ``weights["l2"]`` times the squared norm of the weight matrices.

    The weight is read at every call, so a live ``loss.l2`` change takes effect at once.
    """
    l2 = sum(p.pow(2).sum() for name, p in model.named_parameters() if name.endswith("weight"))
    return nn.functional.cross_entropy(model(x), y) + weights["l2"] * l2


@torch.no_grad()
def evaluate(model: nn.Module, data: Digits) -> dict[str, float]:
    """Validation loss and accuracy."""
    logits = model(data.x_val)
    loss = nn.functional.cross_entropy(logits, data.y_val).item()
    acc = (logits.argmax(dim=1) == data.y_val).float().mean().item()
    return {"val/loss": loss, "val/acc": acc}


def train(
    run_dir: str,
    *,
    steps: int,
    lr: float,
    pace: float,
    seed: int,
    spike_step: int = SPIKE_STEP,
    spike_lr: float = 0.0,
) -> int:
    """Train for ``steps`` steps under a ``Kernel`` in ``run_dir``; return the last step.

    With ``spike_lr > 0`` the schedule raises the learning rate to ``spike_lr`` at
    ``spike_step`` (a schedule bug the autopilot has to catch).
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = load_digits_split(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    factor = spike_lr / lr if spike_lr > 0 else 1.0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: factor if i + 1 >= spike_step else 1.0
    )
    weights = {"l2": 1e-4}
    batches = Batches(data, batch_size=64, seed=seed)
    step = 0
    with Kernel(
        run_dir,
        optimizer=optimizer,
        scheduler=schedule,
        loss_weights=weights,
        key_metric=KEY_METRIC,
        model=model,
        task="demo",
        max_steps=steps,
    ) as k:
        for step in range(1, steps + 1):
            started = time.monotonic()
            loss = loss_fn(model, *batches.next(), weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            metrics = {"train/loss": loss.detach(), "lr": optimizer.param_groups[0]["lr"]}
            if step % EVAL_EVERY == 0:
                metrics.update(evaluate(model, data))
            k.log(step, metrics)
            k.step(step)
            if k.should_stop:
                break
            time.sleep(max(0.0, pace - (time.monotonic() - started)))
    return step


def main(argv: list[str] | None = None) -> int:
    """Command line of the demo's training process."""
    parser = argparse.ArgumentParser(prog="python -m autopilot.cli.demo_train")
    parser.add_argument("--dir", required=True, help="the run directory")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--pace", type=float, default=0.015, help="seconds per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spike-step", type=int, default=SPIKE_STEP)
    parser.add_argument(
        "--spike-lr", type=float, default=0.0, help="the buggy schedule's rate (0: no bug)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    last = train(
        args.dir,
        steps=args.steps,
        lr=args.lr,
        pace=args.pace,
        seed=args.seed,
        spike_step=args.spike_step,
        spike_lr=args.spike_lr,
    )
    logging.getLogger(__name__).info("training ended at step %d", last)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # an exception, unlike the default action, lets `with Kernel(...)` record the end
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
