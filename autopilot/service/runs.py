"""The runs under the service's root: found as they appear, and an ``Autopilot`` ticking
each run whose mode is set: in this process, or spread over worker processes (``shards``).

A run is a directory under the root (at most ``MAX_DEPTH`` levels down) that holds a
``kernel.json``; its id is its path relative to the root with ``~`` for ``/`` (``team~exp1``).
Symbolic links that leave the root are not followed: every path the service touches is
under the root. Each ticked run has an ``Autopilot`` with the lock of ``autopilot watch``: a
run a separate ``watch`` process holds is left to it (and a ``watch`` started later is
refused), and a run whose mode changes is stopped and started again in the new mode. A few
threads (``TickPool``) look at every run each ``[cadence] poll_interval_s`` with
``Autopilot.poll``, the look ``autopilot watch`` repeats, and tick the runs that grew.

Example:
    >>> import tempfile
    >>> fleet = Fleet(tempfile.mkdtemp())
    >>> fleet.scan()
    {}
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autopilot._watch_lock import LOCK_FILE, holder
from autopilot.config import Mode, load_settings
from autopilot.errors import AutopilotError
from autopilot.run_mode import ResolvedMode, resolve_mode
from autopilot.service.shards import Shards, owner
from autopilot.service.tick_pool import TickPool
from autopilot.watch_stats import TickStats
from kernel import read_kernel_state
from kernel.state import AUTOPILOT_DIR, STATE_FILE

if TYPE_CHECKING:
    from autopilot.watch import Autopilot

logger = logging.getLogger(__name__)

MAX_DEPTH = 3
"""How deep under the root run directories are looked for (``root/team/project/run``)."""
SEPARATOR = "~"
PilotState = Literal["ticking", "starting", "watched", "idle", "ended", "failed"]


@dataclass(frozen=True, kw_only=True)
class PilotStatus:
    """What the service does with one run: ``ticking`` it, ``starting``, leaving it to a
    ``watch`` process that holds its lock (``watched``), nothing because no mode is set
    (``idle``) or the run has ended (``ended``), or ``failed`` to start (``detail`` why)."""

    state: PilotState
    mode: Mode | None = None
    detail: str | None = None
    ticks: int = 0
    cpu_s: float = 0.0
    """The CPU time of this run's ticks so far (its thread's)."""
    last_tick_at: float | None = None


@dataclass(kw_only=True)
class _Pilot:
    mode: Mode
    key: tuple[int, float]
    stop: threading.Event = field(default_factory=threading.Event)
    busy: threading.Lock = field(default_factory=threading.Lock)
    """Held while a pool thread looks at the run (``Fleet.stop`` waits for it)."""
    status: PilotStatus = field(default_factory=lambda: PilotStatus(state="starting"))
    autopilot: Autopilot | None = None
    on_tick: Callable[[dict[str, Any]], None] | None = None
    closed: bool = False

    def current(self) -> PilotStatus:
        """The status with the autopilot's tick counts as they are now."""
        if self.autopilot is None:
            return self.status
        stats = self.autopilot.stats
        return replace(
            self.status, ticks=stats.ticks, cpu_s=stats.cpu_s, last_tick_at=stats.last_tick_at
        )


def discover(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """Every run directory under ``root`` by id, sorted; none outside it."""
    real_root = root.resolve()
    found: dict[str, Path] = {}

    def walk(path: Path, depth: int) -> None:
        try:
            children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if not child.is_dir() or SEPARATOR in child.name or not _inside(child, real_root):
                continue
            if (child / STATE_FILE).is_file():
                found[SEPARATOR.join(child.relative_to(root).parts)] = child
            elif depth < max_depth:
                walk(child, depth + 1)

    walk(root, 1)
    return found


def _inside(path: Path, real_root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(real_root)
    except OSError:
        return False


class Fleet:
    """The runs under ``root`` and their autopilots.

    Args:
        root: the directory the run directories appear under (a shared filesystem works).
        default_mode: the mode of runs that set none themselves (``serve --mode``).
        config: the user's ``autopilot.toml`` (``serve --config``).
        poll_s: how often ``start``'s thread looks for new runs and changed modes.
        on_tick: called after each tick of a run with its id and its stats (benchmarks).
        threads: how many threads tick the runs (``TickPool``), in each worker.
        workers: how many processes tick the runs (``Shards``); 1: this process does.
        shard: ``(index, workers)`` in a worker: tick only the runs it owns.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        default_mode: Mode | None = None,
        config: str | None = None,
        poll_s: float = 1.0,
        on_tick: Callable[[str, TickStats], None] | None = None,
        threads: int = 4,
        workers: int = 1,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if poll_s <= 0:
            raise AutopilotError(f"poll_s must be above 0, got {poll_s}")
        if threads < 1:
            raise AutopilotError(f"threads must be at least 1, got {threads}")
        if workers < 1:
            raise AutopilotError(f"workers must be at least 1, got {workers}")
        self.root = Path(root)
        self.default_mode, self.config, self.poll_s = default_mode, config, poll_s
        self.on_tick = on_tick
        self._runs: dict[str, Path] = {}
        self._pilots: dict[str, _Pilot] = {}
        self._ended: dict[str, tuple[int, float]] = {}
        self._failed: dict[str, PilotStatus] = {}
        """Why a run's autopilot could not start (kept until its run segment changes)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads, self._workers, self._shard = threads, workers, shard
        self._pool: TickPool | None = None
        self._shards: Shards | None = None

    # -- runs ------------------------------------------------------------------------------
    def runs(self) -> dict[str, Path]:
        """The runs found by the last scan."""
        with self._lock:
            return dict(self._runs)

    def path_of(self, run_id: str) -> Path | None:
        """The directory of run ``run_id`` (scanning again when it is not known yet)."""
        found = self.runs().get(run_id)
        if found is None:
            found = self.scan(tick=False).get(run_id)
        return found

    def mode_of(self, run_id: str) -> ResolvedMode:
        path = self.path_of(run_id)
        if path is None:
            return ResolvedMode(mode=None, source="unset")
        return resolve_mode(path, self.default_mode, self.config)

    def status_of(self, run_id: str) -> PilotStatus:
        """What the service does with the run now."""
        if self._shards is not None and (reported := self._shards.status(run_id)) is not None:
            return reported
        with self._lock:
            pilot = self._pilots.get(run_id)
            if pilot is not None:
                return pilot.current()
            ended = run_id in self._ended
            failed = self._failed.get(run_id)
        if failed is not None and ended:
            return failed
        path = self.path_of(run_id)
        if path is not None and (watcher := _other_watcher(path, self.pids())) is not None:
            return PilotStatus(state="watched", detail=watcher)
        return PilotStatus(state="ended" if ended else "idle")

    def pids(self) -> list[int]:
        """The processes ticking the runs: this one, or its workers."""
        return [os.getpid()] if self._shards is None else [os.getpid(), *self._shards.pids()]

    # -- the loop --------------------------------------------------------------------------
    def scan(self, *, tick: bool = True) -> dict[str, Path]:
        """Look for runs; with ``tick``, start, stop or restart their autopilots (those it
        owns, in a worker; none, in a service whose workers tick them)."""
        runs = discover(self.root)
        with self._lock:
            self._runs = runs
        if tick and self._workers == 1:
            shard = self._shard
            for run_id, path in runs.items():
                if shard is not None and owner(run_id, shard[1]) != shard[0]:
                    continue
                try:
                    self._reconcile(run_id, path)
                except Exception:  # one bad run directory must not stop the others
                    logger.exception("autopilot serve: run %s skipped this scan", run_id)
        return runs

    def start(self) -> None:
        """Scan every ``poll_s`` in a daemon thread until ``stop`` (and start the workers)."""
        if self._workers > 1:
            self._shards = Shards(
                str(self.root),
                workers=self._workers,
                default_mode=self.default_mode,
                config=self.config,
                poll_s=self.poll_s,
                threads=self._threads,
                on_tick=self.on_tick,
            )
            self._shards.start()
        self._thread = threading.Thread(target=self._loop, name="autopilot-serve", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scanning and every autopilot (each finishes its current tick)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._shards is not None:
            self._shards.stop(timeout)
        with self._lock:
            pilots = list(self._pilots.items())
            pool = self._pool
        for _, pilot in pilots:
            pilot.stop.set()
        if pool is not None:
            pool.stop(timeout)
        for run_id, pilot in pilots:
            if pilot.busy.acquire(timeout=timeout):  # else a tick is stuck: leave it be
                try:
                    self._close(run_id, pilot, ended=False)
                finally:
                    pilot.busy.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            if self._shards is not None:
                self._shards.revive()
            self._stop.wait(self.poll_s)

    def _reconcile(self, run_id: str, path: Path) -> None:
        state = read_kernel_state(path)
        if state is None:
            return
        key = (state.segment, state.started_at)
        wanted = resolve_mode(path, self.default_mode, self.config).mode
        with self._lock:
            pilot = self._pilots.get(run_id)
            if pilot is not None and (pilot.mode != wanted or pilot.key != key):
                pilot.stop.set()  # its thread removes it once the autopilot has closed
                return
            if pilot is not None or wanted is None or self._ended.get(run_id) == key:
                return
            self._failed.pop(run_id, None)
            if state.has_ended():
                self._ended[run_id] = key
                return
        if _other_watcher(path, [os.getpid()]) is not None:
            return
        self._launch(run_id, path, wanted, key)

    def _launch(self, run_id: str, path: Path, mode: Mode, key: tuple[int, float]) -> None:
        pilot = _Pilot(mode=mode, key=key, status=PilotStatus(state="starting", mode=mode))
        with self._lock:
            self._pilots[run_id] = pilot
            if self._pool is None:
                self._pool = TickPool(self._threads, name="autopilot-serve-tick")
            pool = self._pool
        pool.add(partial(self._look, run_id, path, pilot))

    def _look(self, run_id: str, path: Path, pilot: _Pilot) -> float | None:
        """One look at a run (a ``TickPool`` job): start its autopilot, poll it, or close it
        once it is stopped or its run has ended; the seconds from this look's start to the
        next (``None``: no more looks)."""
        with pilot.busy:
            if pilot.closed:
                return None
            autopilot = pilot.autopilot
            if autopilot is None and not pilot.stop.is_set():
                return self._start(run_id, path, pilot)
            over = pilot.stop.is_set()
            if autopilot is not None and not over:
                try:
                    over = autopilot.poll(until_ended=True, on_tick=pilot.on_tick)
                except AutopilotError as exc:  # the run directory was deleted under it
                    logger.warning("autopilot serve: run %s: %s", run_id, exc)
                    over = True
                except Exception:  # a bug: close it; the next scan starts it again
                    logger.exception("autopilot serve: run %s failed; starting it again", run_id)
                    self._close(run_id, pilot, ended=False)
                    return None
            if not over:
                assert autopilot is not None
                return autopilot.settings.cadence.poll_interval_s
            self._close(run_id, pilot, ended=not pilot.stop.is_set())
            return None

    def _start(self, run_id: str, path: Path, pilot: _Pilot) -> float | None:
        from autopilot.watch import Autopilot  # LangGraph: only once a run is ticked

        try:
            settings = load_settings(self.config, path)
            autopilot = Autopilot(path, mode=pilot.mode, settings=settings)
        except AutopilotError as exc:
            logger.warning("autopilot serve: run %s not ticked: %s", run_id, exc)
            pilot.status = PilotStatus(state="failed", mode=pilot.mode, detail=str(exc))
            with self._lock:
                self._failed[run_id] = pilot.status
            pilot.closed = True
            self._forget(run_id, pilot, ended=True)
            return None
        hook = self.on_tick
        pilot.on_tick = None if hook is None else (lambda _: hook(run_id, autopilot.stats))
        pilot.autopilot = autopilot
        pilot.status = PilotStatus(state="ticking", mode=pilot.mode)
        # Runs found together would tick together ever after: spread them over an interval.
        return random.uniform(0.0, autopilot.settings.cadence.poll_interval_s)

    def _close(self, run_id: str, pilot: _Pilot, *, ended: bool) -> None:
        """Close the run's autopilot (once) and forget it (the caller holds ``busy``)."""
        if pilot.closed:
            return
        pilot.closed = True
        if pilot.autopilot is not None:
            try:
                pilot.autopilot.close()
            except Exception:  # the lock and database are released as far as they can be
                logger.exception("autopilot serve: closing run %s failed", run_id)
        self._forget(run_id, pilot, ended=ended)

    def _forget(self, run_id: str, pilot: _Pilot, *, ended: bool) -> None:
        with self._lock:
            if self._pilots.get(run_id) is pilot:
                del self._pilots[run_id]
            if ended:
                self._ended[run_id] = pilot.key


def _other_watcher(path: Path, ours: list[int]) -> str | None:
    """Who else ticks the run (a ``watch`` process holding its lock, not one of ``ours``),
    in words."""
    found = holder(path / AUTOPILOT_DIR / LOCK_FILE)
    if found is None or found.alive is False or found.pid in {str(p) for p in ours}:
        return None
    return f"a watch process (pid {found.pid} on {found.host}, mode {found.mode or '?'})"
