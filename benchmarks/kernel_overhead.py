"""Kernel overhead on a tiny training loop (a benchmark, not a test: it prints figures).

Measures, in one run on this machine:
1. step time of a 2-layer MLP (batch 32, Adam) with and without the kernel, as a ratio;
   both loops are interleaved in rounds so machine noise hits them alike;
2. the cost of ``kernel.step`` when nothing is pending, in microseconds;
3. how many steps a command takes from being appended (by another thread, as another
   process would) to being applied.

Run: ``make bench`` or ``.venv/bin/python benchmarks/kernel_overhead.py [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import torch

from kernel import Command, Kernel, append_command, new_command_id, read_ledger

IN, HIDDEN, OUT, BATCH = 64, 256, 10, 32


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, OUT))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, IN, generator=g), torch.randint(0, OUT, (BATCH,), generator=g))
            for _ in range(n)]


def plain_loop(model, opt, data, start: int) -> float:
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


def overhead(rounds: int, steps: int) -> tuple[float, float]:
    data = batches(steps)
    plain_model, plain_opt = make_model()
    k_model, k_opt = make_model()
    with tempfile.TemporaryDirectory() as d, Kernel(d, optimizer=k_opt) as kernel:
        plain_loop(plain_model, plain_opt, data, 0)  # warm-up both
        kernel_loop(k_model, k_opt, data, 0, kernel)
        plain, with_k = [], []
        for r in range(rounds):
            plain.append(plain_loop(plain_model, plain_opt, data, 0))
            with_k.append(kernel_loop(k_model, k_opt, data, (r + 1) * steps, kernel))
    return statistics.median(plain), statistics.median(with_k)


def idle_step_cost(calls: int = 200_000) -> float:
    _, opt = make_model()
    with tempfile.TemporaryDirectory() as d, Kernel(d, optimizer=opt) as kernel:
        samples = []
        for rep in range(5):
            t0 = time.perf_counter()
            for i in range(rep * calls, (rep + 1) * calls):
                kernel.step(i)
            samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


def command_latency(commands: int = 20) -> list[int]:
    """Steps between a command's append and the step at which the ledger applied it."""
    model, opt = make_model()
    data = batches(64)
    with tempfile.TemporaryDirectory() as d, Kernel(d, optimizer=opt) as kernel:
        sent: dict[str, int] = {}
        step = [0]

        def sender() -> None:
            for n in range(commands):
                time.sleep(0.013 + 0.007 * (n % 3))
                cid = new_command_id("bench")
                sent[cid] = step[0]
                append_command(d, Command(id=cid, source="human", knob="weight_decay",
                                          value=1e-4 * (n % 2)))

        thread = threading.Thread(target=sender)
        thread.start()
        while thread.is_alive() or len(read_ledger(d)) < commands:
            x, y = data[step[0] % len(data)]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            kernel.step(step[0])
            step[0] += 1
        thread.join()
        return [row.step - sent[row.command_id] for row in read_ledger(d)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, with_k = overhead(args.rounds, args.steps)
    idle = idle_step_cost()
    lat = command_latency()
    print(f"MLP {IN}-{HIDDEN}-{OUT}, batch {BATCH}, Adam, torch threads 1, "
          f"{args.rounds} interleaved rounds x {args.steps} steps (medians)")
    print(f"  step time without kernel : {plain * 1e6:8.1f} us")
    print(f"  step time with kernel    : {with_k * 1e6:8.1f} us")
    print(f"  overhead                 : {100 * (with_k / plain - 1):+8.2f} %  (target <= 2 %)")
    print(f"  kernel.step, no command  : {idle * 1e6:8.2f} us  (target < 20 us)")
    print(f"  append -> applied        : median {statistics.median(lat)} steps, "
          f"max {max(lat)} steps over {len(lat)} commands")


if __name__ == "__main__":
    main()
