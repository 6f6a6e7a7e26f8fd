"""One `autopilot serve` process watching many live runs: tick lag, RSS and CPU per run.

N synthetic writers (one writer process for all of them, so the service's process holds
only the service) append 20 metrics at ``--rate`` steps/s to each run, flushing every
0.25 s like the kernel, and refresh each ``kernel.json`` heartbeat every second. In this
process the real service runs: the FastAPI app on uvicorn over the run root, its ``Fleet``
ticking every run in mode ``auto``. After a warm-up (every run has ticked twice), it
measures over ``--seconds``:

- lag: for each tick, from the first flush it had not seen before to the tick's end; a
  run "ticked within one tick interval" when that is at most ``cadence.poll_interval_s``
  plus the tick itself (the watcher polls, then ticks);
- RSS of the service process, and its CPU (process, and per run from each run's ticks);
- data left unticked at the end.

    .venv/bin/python benchmarks/service_fleet.py --runs 100 --rate 100 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

from _synthetic_run import append, kernel_state, write_run

from kernel.metrics import METRICS_FILE
from kernel.state import write_kernel_state

HISTORY = 1000
FLUSH_S = 0.25


def writer(root: str, runs: int, rate: float, stop_at: float, out: str, stop: Any) -> None:
    """Append ``rate`` steps/s to each run until ``stop_at``; log each flush's size/time."""
    dirs = [Path(root) / f"run{i:03d}" for i in range(runs)]
    rngs = [random.Random(i) for i in range(runs)]
    step = [HISTORY + 1] * runs
    flushes: list[list[tuple[int, float]]] = [[] for _ in range(runs)]
    started = time.time()
    next_flush = [started + FLUSH_S * i / runs for i in range(runs)]  # staggered
    next_beat = started
    states = [kernel_state(HISTORY).model_copy(update={"pid": os.getpid()}) for _ in dirs]
    while time.time() < stop_at and not stop.is_set():
        now = time.time()
        for i in range(runs):
            if now < next_flush[i]:
                continue
            due = int((now - started) * rate) + HISTORY + 1
            if due > step[i]:
                append(dirs[i], step[i], due - step[i], rngs[i])
                step[i] = due
                flushes[i].append((os.path.getsize(dirs[i] / METRICS_FILE), time.time()))
            next_flush[i] += FLUSH_S
        if now >= next_beat:
            for i in range(runs):
                beat = {"heartbeat": time.time(), "last_step": step[i] - 1}
                write_kernel_state(dirs[i], states[i].model_copy(update=beat))
            next_beat += 1.0
        time.sleep(0.005)
    cpu = time.process_time()
    wall = time.time() - started
    Path(out).write_text(json.dumps({"flushes": flushes, "cpu_s": cpu, "wall_s": wall}))


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="steps/s per run")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-limit", type=float, default=180.0)
    parser.add_argument("--poll", type=float, default=None, help="cadence.poll_interval_s")
    parser.add_argument("--threads", type=int, default=4, help="tick threads per process")
    parser.add_argument("--workers", type=int, default=1, help="processes that tick (serve)")
    args = parser.parse_args()

    import uvicorn

    from autopilot.config import Settings
    from autopilot.quiet_gc import quiet_gc
    from autopilot.service.app import create_app
    from autopilot.service.auth import Token
    from autopilot.service.runs import Fleet
    from autopilot.watch_stats import TickStats

    if args.workers == 1:
        quiet_gc()  # as `autopilot serve` does

    tmp = Path(tempfile.mkdtemp(prefix="service-fleet-"))
    config = None
    if args.poll is not None:
        config = tmp / "autopilot.toml"
        config.write_text(f"[cadence]\npoll_interval_s = {args.poll}\n")
    poll_s = Settings().cadence.poll_interval_s if args.poll is None else args.poll
    os.environ["XDG_STATE_HOME"] = str(tmp / "state")  # a scratch memory store
    root = tmp / "runs"
    for i in range(args.runs):
        write_run(root / f"run{i:03d}", HISTORY, seed=i)
    rss_start = rss_mb()

    ticks: dict[str, list[tuple[int, float, float]]] = {}
    guard = threading.Lock()

    def on_tick(run_id: str, stats: TickStats) -> None:
        with guard:
            ticks.setdefault(run_id, []).append(
                (stats.seen_bytes, stats.last_tick_at or time.time(), stats.cpu_s)
            )

    fleet = Fleet(
        root,
        default_mode="auto",
        config=None if config is None else str(config),
        poll_s=1.0,
        on_tick=on_tick,
        threads=args.threads,
        workers=args.workers,
    )
    app = create_app(root, token=Token(value="t" * 32, source="bench"), fleet=fleet, tick=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    serving = threading.Thread(target=server.run, daemon=True)

    ctx = multiprocessing.get_context("spawn")
    log = tmp / "flushes.json"
    horizon = time.time() + args.warmup_limit + args.seconds + 5
    stop = ctx.Event()
    proc = ctx.Process(
        target=writer, args=(str(root), args.runs, args.rate, horizon, str(log), stop)
    )
    proc.start()
    serving.start()

    t0 = time.time()
    while time.time() - t0 < args.warmup_limit:
        with guard:
            warm = sum(len(v) >= 2 for v in ticks.values())
        if warm == args.runs:
            break
        time.sleep(0.2)
    warmup_s = time.time() - t0
    workers = fleet.pids()[1:]
    cpu0, w0 = time.process_time() + sum(cpu_s(p) for p in workers), time.time()
    with guard:
        cpu_runs0 = {k: v[-1][2] for k, v in ticks.items()}

    def rss_all() -> float:
        return rss_mb() + sum(rss_mb(p) for p in workers)

    rss_peak = rss_all()
    while time.time() - w0 < args.seconds:
        time.sleep(1.0)
        rss_peak = max(rss_peak, rss_all())
    w1, cpu1 = time.time(), time.process_time() + sum(cpu_s(p) for p in workers)
    with guard:
        snapshot = {k: list(v) for k, v in ticks.items()}
    stop.set()  # the writer writes its log on its way out
    proc.join(30)
    fleet.stop(timeout=10)
    server.should_exit = True

    flushes = _flushes(log)
    lags: list[float] = []
    per_run_max: list[float] = []
    cpu_runs: list[float] = []
    for i in range(args.runs):
        run_id = f"run{i:03d}"
        times = snapshot.get(run_id, [])
        window = [t for t in times if w0 <= t[1] <= w1]
        cpu_runs.append((window[-1][2] - cpu_runs0.get(run_id, 0.0)) / (w1 - w0) if window else 0.0)
        run_flushes = flushes[i] if flushes else []
        sizes = [s for s, _ in run_flushes]
        prev = [t[0] for t in times]
        worst = 0.0
        for k, (seen, end, _) in enumerate(times):
            if not w0 <= end <= w1 or k == 0:
                continue
            first = bisect_right(sizes, prev[k - 1])  # first flush past the previous tick
            if first < len(run_flushes) and run_flushes[first][0] <= seen:
                lag = end - run_flushes[first][1]
                lags.append(lag)
                worst = max(worst, lag)
        per_run_max.append(worst)
    gaps = [
        b[1] - a[1]
        for v in snapshot.values()
        for a, b in zip(v, v[1:], strict=False)
        if w0 <= a[1] and b[1] <= w1
    ]
    if gaps:
        print(
            f"gap between a run's ticks: median {statistics.median(gaps):.3f} s, "
            f"max {max(gaps):.3f} s; ticks per run {sorted(len(v) for v in snapshot.values())}"
        )
    within = sum(m <= poll_s + 0.1 for m in per_run_max)
    cpu_pct = 100 * (cpu1 - cpu0) / (w1 - w0)
    q = statistics.quantiles(lags, n=100) if len(lags) > 100 else [float("nan")] * 99
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"runs {args.runs}, {args.rate:g} steps/s each, 20 metrics, {args.workers} worker "
        f"process(es) x {args.threads} tick threads, warm-up {warmup_s:.1f} s"
    )
    print("| measure | value |\n|---|---|")
    print(f"| ticks in {w1 - w0:.0f} s | {len(lags)} ({len(lags) / (w1 - w0):.0f}/s) |")
    print(
        f"| lag new data -> tick end, median / p99 / max | {q[49]:.3f} / {q[98]:.3f} / "
        f"{max(lags, default=float('nan')):.3f} s |"
    )
    print(
        f"| runs whose every tick came within one poll ({poll_s} s, +0.1 s) | "
        f"{within} of {args.runs} |"
    )
    print(f"| service CPU (all its processes) | {cpu_pct:.0f} % of a core |")
    if (writer_cpu := _writer_cpu(log)) is not None:
        print(f"| the writer's CPU (another process, all runs) | {writer_cpu:.0f} % of a core |")
    print(
        f"| CPU per run, median / max | {100 * statistics.median(cpu_runs):.2f} / "
        f"{100 * max(cpu_runs):.2f} % of a core |"
    )
    print(
        f"| RSS before serving / peak (all processes) / ru_maxrss (this one) | "
        f"{rss_start:.0f} / {rss_peak:.0f} / {maxrss:.0f} MB |"
    )


def _flushes(log: Path) -> list[list[tuple[int, float]]] | None:
    try:
        return [[tuple(f) for f in run] for run in json.loads(log.read_text())["flushes"]]
    except (OSError, ValueError, KeyError):
        return None


def _writer_cpu(log: Path) -> float | None:
    """The writer's CPU over its life, in percent of a core."""
    try:
        found = json.loads(log.read_text())
        return 100 * found["cpu_s"] / found["wall_s"]
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return None


if __name__ == "__main__":
    main()
