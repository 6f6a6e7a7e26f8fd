"""Kernel overhead on a tiny training loop (a benchmark, not a test: it prints figures).

Measures, in one run on this machine:
1. the step time of a 2-layer MLP (batch 32, Adam) with and without the kernel: both loops
   train the same model in alternating rounds, no kernel exists during the plain rounds,
   and the overhead is the median of the per-round ratios (pairs cancel machine drift);
2. the cost of ``kernel.step`` when nothing is pending, in microseconds;
3. how many steps a command takes from being appended (by another thread, as another
   process would) to being applied.

Run: ``make bench`` or ``.venv/bin/python benchmarks/kernel_overhead.py [--rounds 41]``;
``--set reflex_action=off --set snapshot_every_steps=0`` measures the kernel with some of its
parts off (any ``KernelSettings`` field).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from typing import Any

import torch

from kernel import Command, Kernel, KernelSettings, append_command, new_command_id, read_ledger

SETTINGS = KernelSettings()

HIDDEN, OUT, BATCH = 256, 10, 32


def make_model(n_in: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(n_in, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT)
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def batches(n: int, n_in: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, n_in, generator=g), torch.randint(0, OUT, (BATCH,), generator=g))
        for _ in range(n)
    ]


def plain_loop(model, opt, data) -> float:
    t0 = time.perf_counter()
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss.item()
    return (time.perf_counter() - t0) / len(data)


def kernel_loop(model, opt, data, start: int, kernel: Kernel) -> float:
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(data, start):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        kernel.clip_grad_norm_(model.parameters())
        opt.step()
        opt.zero_grad()
        kernel.log(i, {"train/loss": loss.item()})
        kernel.step(i)
    return (time.perf_counter() - t0) / len(data)


def overhead(n_in: int, rounds: int, steps: int) -> tuple[float, float, float]:
    """Median plain step time, median kernel step time, median paired ratio."""
    data = batches(steps, n_in)
    model, opt = make_model(n_in)
    plain, with_k = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds + 1):  # round 0 warms both up and is not counted
            t_plain = plain_loop(model, opt, data)
            with Kernel(d, optimizer=opt, settings=SETTINGS) as kernel:
                t_kernel = kernel_loop(model, opt, data, r * steps, kernel)
            if r:
                plain.append(t_plain)
                with_k.append(t_kernel)
    ratio = statistics.median(k / p for k, p in zip(with_k, plain, strict=True))
    return statistics.median(plain), statistics.median(with_k), ratio


def idle_step_cost(calls: int = 200_000) -> float:
    _, opt = make_model(64)
    with tempfile.TemporaryDirectory() as d, Kernel(d, optimizer=opt, settings=SETTINGS) as kernel:
        samples = []
        for rep in range(5):
            t0 = time.perf_counter()
            for i in range(rep * calls, (rep + 1) * calls):
                kernel.step(i)
            samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


def command_latency(n_in: int, commands: int = 20) -> tuple[list[int], list[float]]:
    """Steps and seconds between a command's append and the step that applied it."""
    model, opt = make_model(n_in)
    data = batches(64, n_in)
    with tempfile.TemporaryDirectory() as d, Kernel(d, optimizer=opt) as kernel:
        sent: dict[str, tuple[int, float]] = {}
        applied_at: dict[int, float] = {}
        step = 0

        def sender() -> None:
            for n in range(commands):
                time.sleep(0.031 + 0.007 * (n % 3))
                cid = new_command_id("bench")
                sent[cid] = (step, time.monotonic())
                value = 1e-4 * (n % 2)
                append_command(d, Command(id=cid, source="human", knob="weight_decay", value=value))

        thread = threading.Thread(target=sender)
        thread.start()
        while thread.is_alive() or len(read_ledger(d)) < commands:
            x, y = data[step % len(data)]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            kernel.step(step)
            applied_at[step] = time.monotonic()
            step += 1
        thread.join()
        # every row of this run is one of the commands sent, applied at a step
        rows = [(r.step, r.command_id) for r in read_ledger(d)]
        handled = [(s, c) for s, c in rows if s is not None and c is not None]
    steps = [s - sent[c][0] for s, c in handled]
    seconds = [applied_at[s] - sent[c][1] for s, c in handled]
    return steps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a KernelSettings field"
    )
    args = parser.parse_args()
    global SETTINGS
    SETTINGS = KernelSettings(**dict(_setting(s) for s in args.set))
    torch.set_num_threads(1)
    print(
        f"2-layer MLP (hidden {HIDDEN}), batch {BATCH}, Adam, torch threads 1, "
        f"{args.rounds} paired rounds x {args.steps} steps"
    )
    print("| model | step without kernel | step with kernel | overhead (target <= 2 %) |")
    print("|---|---|---|---|")
    for n_in in (64, 784):
        plain, with_k, ratio = overhead(n_in, args.rounds, args.steps)
        print(
            f"| {n_in}-{HIDDEN}-{OUT} | {plain * 1e6:.1f} us | {with_k * 1e6:.1f} us "
            f"| {100 * (ratio - 1):+.2f} % |"
        )
    idle = idle_step_cost()
    steps, seconds = command_latency(64)
    print(f"\nkernel.step with nothing pending: {idle * 1e6:.2f} us (target < 20 us)")
    print(
        f"append -> applied ({len(steps)} commands, 64-input MLP): median "
        f"{statistics.median(steps):.0f} steps / {1e3 * statistics.median(seconds):.1f} ms, "
        f"max {max(steps)} steps / {1e3 * max(seconds):.1f} ms"
    )


def _setting(text: str) -> tuple[str, Any]:
    name, _, raw = text.partition("=")
    if not hasattr(SETTINGS, name):
        raise SystemExit(f"KernelSettings has no field {name!r}")
    kind = type(getattr(SETTINGS, name))
    return name, raw if kind is str else kind(float(raw)) if kind is not bool else raw == "true"


if __name__ == "__main__":
    main()
