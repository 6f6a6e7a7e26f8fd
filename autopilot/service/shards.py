"""The runs of one root ticked by several worker processes (``serve --workers N``).

One process runs Python on one core at a time, so a service watching a hundred busy runs
spreads their autopilots over ``N`` workers: each is a ``Fleet`` over the runs it owns
(``owner``: a hash of the run's id, so a run stays with its worker across restarts), and
the serving process keeps the API, the scan for new runs and the workers' reports of what
they do with each run. A worker that dies is started again, and its runs with it (each
autopilot resumes from its checkpoint in the run directory).

Example:
    >>> [owner(run_id, 2) for run_id in ("team~exp1", "team~exp2", "team~exp3", "team~exp4")]
    [0, 0, 0, 1]
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from autopilot.config import Mode
from autopilot.watch_stats import TickStats

if TYPE_CHECKING:
    from autopilot.service.runs import PilotStatus

logger = logging.getLogger(__name__)

REPORT_S = 0.5
"""How often a worker reports what it does with each of its runs."""


def owner(run_id: str, workers: int) -> int:
    """The worker (``0 .. workers-1``) that ticks run ``run_id``."""
    return zlib.crc32(run_id.encode()) % workers


@dataclass(frozen=True, kw_only=True)
class WorkerArgs:
    """What a worker needs to build its ``Fleet`` (sent to a spawned process)."""

    root: str
    default_mode: Mode | None
    config: str | None
    poll_s: float
    threads: int
    index: int
    workers: int
    ticks: bool
    """Whether to report every tick (the serving process has an ``on_tick`` hook)."""
    log_level: int


def work(args: WorkerArgs, reports: Any, parent: int) -> None:
    """A worker process: tick the runs it owns, reporting to ``reports``, until SIGTERM or
    until its parent (process ``parent``) is gone.

    Stopping goes by signal, not by a shared ``multiprocessing.Event``: setting one waits
    for every process that waits on it, and a worker killed while waiting never answers."""
    from autopilot.quiet_gc import quiet_gc
    from autopilot.service.runs import Fleet

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    logging.basicConfig(level=args.log_level, format="autopilot: %(levelname)s %(message)s")
    quiet_gc()  # a worker's main job is to watch, as ``autopilot watch``'s is

    def ticked(run_id: str, stats: TickStats) -> None:
        reports.put(("tick", run_id, replace(stats)))

    fleet = Fleet(
        args.root,
        default_mode=args.default_mode,
        config=args.config,
        poll_s=args.poll_s,
        threads=args.threads,
        on_tick=ticked if args.ticks else None,
        shard=(args.index, args.workers),
    )
    fleet.start()
    try:
        while not stop.wait(REPORT_S) and os.getppid() == parent:
            owned = [r for r in fleet.runs() if owner(r, args.workers) == args.index]
            reports.put(("status", args.index, {r: fleet.status_of(r) for r in owned}))
    finally:
        fleet.stop()


class Shards:
    """``workers`` processes ticking the runs under ``root``; what each reported last."""

    def __init__(
        self,
        root: str,
        *,
        workers: int,
        default_mode: Mode | None,
        config: str | None,
        poll_s: float,
        threads: int,
        on_tick: Callable[[str, TickStats], None] | None,
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # threads and uvicorn live here
        self._args = [
            WorkerArgs(
                root=root,
                default_mode=default_mode,
                config=config,
                poll_s=poll_s,
                threads=threads,
                index=i,
                workers=workers,
                ticks=on_tick is not None,
                log_level=logging.getLogger().getEffectiveLevel(),
            )
            for i in range(workers)
        ]
        self._on_tick = on_tick
        self._reports = self._ctx.Queue()
        self._stopping = False
        self._procs: list[BaseProcess | None] = [None] * workers
        self._status: list[dict[str, PilotStatus]] = [{} for _ in range(workers)]
        self._lock = threading.Lock()
        self._draining = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="autopilot-shards", daemon=True)

    def start(self) -> None:
        for i in range(len(self._args)):
            self._spawn(i)
        self._drainer.start()

    def revive(self) -> None:
        """Start again each worker that died (its runs go on where they were)."""
        for i, proc in enumerate(self._procs):
            if proc is not None and not proc.is_alive() and not self._stopping:
                logger.error(
                    "autopilot serve: worker %d (pid %s) died (exit code %s); starting it again",
                    i,
                    proc.pid,
                    proc.exitcode,
                )
                with self._lock:
                    self._status[i] = {}
                self._spawn(i)

    def _spawn(self, i: int) -> None:
        proc = self._ctx.Process(
            target=work,
            args=(self._args[i], self._reports, os.getpid()),
            name=f"autopilot-serve-worker-{i}",
            daemon=True,
        )
        proc.start()
        self._procs[i] = proc

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every worker (each finishes its ticks and closes its autopilots)."""
        self._stopping = True
        for proc in self._procs:
            if proc is not None:
                proc.terminate()  # SIGTERM: the worker closes its autopilots and exits
        for proc in self._procs:  # the drainer keeps reading, so no worker waits on a put
            if proc is not None:
                proc.join(timeout)
                if proc.is_alive():
                    logger.warning("autopilot serve: worker pid %s did not stop; killed", proc.pid)
                    proc.kill()
        self._draining.set()
        if self._drainer.is_alive():
            self._drainer.join(timeout)

    def status(self, run_id: str) -> PilotStatus | None:
        """What the run's worker reported doing with it (``None``: nothing yet)."""
        with self._lock:
            return self._status[owner(run_id, len(self._status))].get(run_id)

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs if p is not None and p.pid is not None]

    def _drain(self) -> None:
        while not self._draining.is_set():
            try:
                message = self._reports.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # the queue is gone: the service is shutting down
                return
            if message[0] == "status":
                _, index, statuses = message
                with self._lock:
                    self._status[index] = statuses
            elif message[0] == "tick" and self._on_tick is not None:
                self._on_tick(message[1], message[2])
