"""A few threads that look at many runs: each job runs again the interval it returns after
it started.

``serve`` ticks every run of its root in a process (or a few). A thread per run would leave a
hundred threads contending for one interpreter lock, each tick waiting for the others at
every read and write; the pool keeps ``threads`` of them (enough that an LLM call, which
waits on the network, does not hold up the other runs) and a queue of jobs ordered by when
each is due. A job is run by one thread at a time, so one run is never ticked twice at once,
and at a fixed rate: a look that took 50 ms does not push the next one 50 ms later (one that
took longer than its interval is followed at once).

Example:
    >>> import threading
    >>> done = threading.Event()
    >>> calls = []
    >>> def job() -> float | None:
    ...     calls.append(1)
    ...     if len(calls) == 3:
    ...         done.set()
    ...         return None  # finished: not run again
    ...     return 0.01
    >>> pool = TickPool(threads=2)
    >>> pool.add(job)
    >>> done.wait(5)
    True
    >>> pool.stop()
    >>> len(calls)
    3
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

Job = Callable[[], float | None]
"""One look at a run: the seconds from its start to the next, or ``None`` when finished."""


class TickPool:
    """``threads`` daemon threads running the jobs added, each when it is due."""

    def __init__(self, threads: int = 4, name: str = "autopilot-tick") -> None:
        if threads < 1:
            raise ValueError(f"a tick pool needs at least 1 thread, got {threads}")
        self._due: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def add(self, job: Job, delay: float = 0.0) -> None:
        """Run ``job`` in ``delay`` seconds, then again each interval it returns."""
        self._schedule(job, time.monotonic() + delay)

    def _schedule(self, job: Job, due: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (due, next(self._order), job))
            self._cond.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the jobs running finish (none starts after this), then end the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            started = time.monotonic()
            try:
                interval = job()
            except Exception:  # a job must catch its own errors; a bug drops only that job
                logger.exception("a tick job failed and is dropped")
                continue
            if interval is not None:
                self._schedule(job, started + interval)

    def _next(self) -> Job | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                self._cond.wait(self._due[0][0] - now if self._due else None)
            return None
