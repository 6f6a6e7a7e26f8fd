"""Snapshot cost at the default cadence (a benchmark, not a test: it prints figures).

Measures, in one run on this machine, for the 64-256-10 MLP (batch 32, Adam, a scheduler):
1. the time of one snapshot (CPU copies of parameters, optimizer and scheduler state, knobs
   and RNG) and of one restore, as medians;
2. that time spread over the default cadence (``snapshot_every_steps``) as a ratio of the
   step time of the same loop under the kernel;
3. the step time of the kernel loop with snapshots on against the same loop with them off,
   in alternating rounds (the median of the per-round ratios; pairs cancel machine drift).

Run: ``.venv/bin/python benchmarks/snapshot_cost.py [--rounds 21 --steps 400]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from kernel import Kernel, KernelSettings

N_IN, HIDDEN, OUT, BATCH = 64, 256, 10, 32


def make_run() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1000, gamma=0.5)


def loop_time(steps: int, settings: KernelSettings) -> float:
    """Seconds per step of a kernel loop under ``settings``."""
    model, opt, sched = make_run()
    x, y = torch.randn(BATCH, N_IN), torch.randint(0, OUT, (BATCH,))
    with Kernel(
        tempfile.mkdtemp(), optimizer=opt, scheduler=sched, model=model, settings=settings
    ) as kernel:
        start = time.perf_counter()
        for step in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()  # type: ignore[attr-defined]
            kernel.log(step, {"train/loss": loss.detach()})
            kernel.step(step)
        return (time.perf_counter() - start) / steps


def snapshot_times(repeats: int) -> tuple[float, float]:
    """Median seconds of one snapshot and of one restore."""
    model, opt, sched = make_run()
    torch.nn.functional.cross_entropy(
        model(torch.randn(BATCH, N_IN)), torch.zeros(BATCH).long()
    ).backward()
    opt.step()
    with Kernel(tempfile.mkdtemp(), optimizer=opt, scheduler=sched, model=model) as kernel:
        state = kernel._rewinder.state
        takes, restores = [], []
        for i in range(repeats):
            start = time.perf_counter()
            snap = state.capture(i)
            takes.append(time.perf_counter() - start)
            start = time.perf_counter()
            state.restore(snap)
            restores.append(time.perf_counter() - start)
    return statistics.median(takes), statistics.median(restores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    every = KernelSettings().snapshot_every_steps
    take, restore = snapshot_times(200)
    on, off = KernelSettings(), KernelSettings(snapshot_every_steps=0)
    loop_time(50, on)  # warm up
    ratios, steps_on, steps_off = [], [], []
    for _ in range(args.rounds):
        t_on, t_off = loop_time(args.steps, on), loop_time(args.steps, off)
        steps_on.append(t_on)
        steps_off.append(t_off)
        ratios.append(t_on / t_off - 1)
    step = statistics.median(steps_off)
    print(f"model {N_IN}-{HIDDEN}-{OUT}, batch {BATCH}, Adam + StepLR, 1 thread")
    print(f"one snapshot: {take * 1e6:.0f} us; one restore: {restore * 1e6:.0f} us")
    print(f"step time under the kernel, snapshots off: {step * 1e6:.0f} us")
    print(f"snapshot every {every} steps: {take / (every * step):+.2%} of the step time (computed)")
    print(
        f"loop with snapshots on vs off: {statistics.median(ratios):+.2%} "
        f"(median of {args.rounds} paired rounds of {args.steps} steps; "
        f"snapshots on: {statistics.median(steps_on) * 1e6:.0f} us/step)"
    )


if __name__ == "__main__":
    main()
