"""A training process for the restart tests: a tiny SGD loop under a Kernel.

Usage: ``python _train_loop.py RUN_DIR STEPS`` (``STEPS`` 0: until stopped or killed).

It resumes from ``RUN_DIR/ckpt.pt`` when there is one, as a real job does after a crash, and
saves that checkpoint (atomically) after every step, so the test can tell which steps a
killed process got through.
"""

from __future__ import annotations

import itertools
import os
import sys

import torch

from kernel import Kernel, KernelSettings


def main(run_dir: str, steps: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = os.path.join(run_dir, "ckpt.pt")
    start = 0
    if os.path.exists(ckpt):
        saved = torch.load(ckpt)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        start = saved["step"] + 1
    settings = KernelSettings(poll_interval_s=0.0, pause_poll_s=0.005)
    with Kernel(run_dir, optimizer=opt, settings=settings) as kernel:
        for step in itertools.islice(itertools.count(start), steps or None):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            kernel.log(step, {"train/loss": loss.item()})
            kernel.step(step)
            tmp = ckpt + ".tmp"
            torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()}, tmp)
            os.replace(tmp, ckpt)
            if kernel.should_stop:
                break


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
