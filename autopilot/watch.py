"""The autopilot process: ticks the graph as new metrics arrive, beside a training run.

``Autopilot`` owns one run directory (an exclusive lock file keeps a second autopilot out),
the graph and its SQLite checkpointer (plain values only, bounded: ``autopilot._checkpoint``).
A tick that decides is checkpointed just before ``route`` acts, so a watcher killed while it
dispatches resumes that same decision (same id, already written: nothing twice) instead of
deciding again on what it reads after the restart. ``run`` polls the metrics file with one
``stat`` per poll and ticks when it grew; it returns once the training has ended and
everything it wrote was read, and raises when the run directory is deleted under it.
``start_in_background`` runs the same loop in a daemon thread of the training process: the
loop never touches the training objects, so an LLM call that takes 30 s never delays
``kernel.step``.

Example:
    >>> import tempfile, torch
    >>> from kernel import Kernel
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    >>> with Kernel(tempfile.mkdtemp(), optimizer=opt, key_metric="train/loss") as kernel:
    ...     pilot = start_in_background(kernel.run_dir, mode="suggest")
    ...     for step in range(20):  # train under the Kernel as usual
    ...         kernel.log(step, {"train/loss": 1 / (step + 1)})
    ...         kernel.step(step)
    ...     pilot.stop()
    >>> pilot.pilot.mode
    'suggest'
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig

from autopilot import tune_node
from autopilot._checkpoint import (
    CheckpointRefused,
    CheckpointUnavailable,
    checkpointer_for,
    prune,
    truncate_wal,
)
from autopilot._watch_lock import LOCK_FILE, acquire
from autopilot.config import AI_MODES, MODES, Mode, Settings, check_bounds
from autopilot.detectors import Detector
from autopilot.errors import AutopilotError
from autopilot.graph import build_graph
from autopilot.observe import file_size
from autopilot.state import TickContext, TickState
from autopilot.watch_stats import TickStats
from kernel import read_kernel_state
from kernel.jsonl import read_json
from kernel.metrics import METRICS_FILE
from kernel.state import AUTOPILOT_DIR

logger = logging.getLogger(__name__)

DISPATCH = ("route",)
"""The node with side effects: the state is checkpointed before it runs."""
_CRAFTED = (AttributeError, KeyError, TypeError, ValueError)
"""What LangGraph raises on a checkpoint of plain values in a shape it never writes."""
_THREAD = re.compile(r"autopilot-\d{1,9}")


class Autopilot:
    """The autopilot of one run directory.

    Args:
        run_dir: the training run's directory (the one given to ``Kernel``).
        mode: ``off``, ``suggest``, ``auto``, ``ai_suggest`` or ``ai_auto``.
        settings: the loaded ``autopilot.toml`` (defaults when ``None``).
        llm_policy: a ready LLM policy (tests and embedders); built on first use otherwise.
        detectors: the detectors to run, configured through their constructors; ``None``
            builds the four built-in ones from ``settings.detectors``.

    Raises:
        AutopilotError: for an unknown mode, when another autopilot watches the run, or
            (``ConfigError``) for ``[bounds]`` naming a knob the kernel has not published.

    A graph checkpoint that holds more than plain values (crafted, garbled, not a database)
    is refused with a warning that says why, and the autopilot starts afresh.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        mode: str,
        settings: Settings | None = None,
        llm_policy: Any = None,
        detectors: Sequence[Detector] | None = None,
    ) -> None:
        if mode not in MODES:
            raise AutopilotError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.run_dir, self.mode = Path(run_dir), mode
        self.settings = settings or Settings()
        check_bounds(self.settings, read_kernel_state(self.run_dir))
        self.state_dir = self.run_dir / AUTOPILOT_DIR
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = acquire(self.state_dir / LOCK_FILE, mode)
        self._identity = _identity(self.run_dir)
        self.context = TickContext.create(
            self.run_dir,
            self.settings,
            cast(Mode, mode),
            llm_policy=llm_policy,
            detectors=detectors,
        )
        self._thread = _thread_of(self.state_dir)
        self._resume = self._open_checkpoint()
        self.stats = TickStats()
        self._seen, self._failures = -1, 0  # metrics' size at the last tick; failed ticks
        if mode in AI_MODES:
            self.context.llm.warm_up()

    def _open_checkpoint(self) -> bool:
        """Open the checkpoint and read its latest state once; whether a tick was cut short
        (it resumes). An untrusted checkpoint is refused, and a fresh one opened."""
        conn = None
        try:
            self._saver, conn, self._thread = checkpointer_for(
                self.run_dir, self.settings, thread=_thread_of(self.state_dir)
            )
            self.graph = build_graph(self.context, self._saver)
            state = self.graph.get_state(self._config(self._thread))
            if not isinstance(state.values, dict):
                raise TypeError(f"the state must be a JSON object, got {state.values!r:.80}")
        except (sqlite3.OperationalError, CheckpointUnavailable) as exc:  # I/O, not content
            if conn is not None:
                conn.close()
            os.close(self._lock_fd)
            raise AutopilotError(
                f"cannot open the graph checkpoint in {self.state_dir}: {exc}"
            ) from None
        except (sqlite3.DatabaseError, CheckpointRefused, *_CRAFTED) as exc:
            if conn is not None:
                conn.close()
            self._saver, conn, self._thread = checkpointer_for(
                self.run_dir, self.settings, thread=_thread_of(self.state_dir),
                refused=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
            self.graph = build_graph(self.context, self._saver)
            self._conn = conn
            return False
        self._conn = conn
        return bool(state.next)

    @staticmethod
    def _config(thread: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread}}

    def tick(self) -> dict[str, Any]:
        """One pass of the graph over what was appended since the last; the new state.

        A tick that reaches ``route`` stops before it and is checkpointed, then goes on: a
        watcher killed while ``route`` writes resumes exactly that decision, which then
        finds its record (or its commands, by id) already written."""
        config = self._config(self._thread)
        given: TickState | None = None if self._resume else {}
        self._resume = False
        state, stopped = self._invoke(given, config)
        if stopped:
            state, _ = self._invoke(None, config)
        prune(self._saver, config)  # a resume needs only the latest checkpoint
        return state

    def _invoke(
        self, given: TickState | None, config: RunnableConfig
    ) -> tuple[dict[str, Any], bool]:
        """Run the graph until it ends or stops before ``DISPATCH``; the state, and whether
        it stopped there."""
        values: dict[str, Any] = {}
        stopped = False
        for mode, payload in self.graph.stream(
            given,
            config,
            stream_mode=["updates", "values"],
            interrupt_before=DISPATCH,
            durability="exit",
        ):
            if mode == "values":
                values = dict(cast(dict[str, Any], payload))
            elif isinstance(payload, dict) and "__interrupt__" in payload:
                stopped = True
        return values, stopped

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        until_ended: bool = True,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Tick whenever the metrics grow, until ``stop`` is set or (with ``until_ended``) the
        training has ended and its last metrics were read: ``poll`` every
        ``[cadence] poll_interval_s``. Errors are logged, never raised: the autopilot must
        not take anything down with it.

        Raises:
            AutopilotError: the run directory was deleted (or replaced by another)."""
        stop = stop or threading.Event()
        self._seen = -1  # a loop started again ticks first
        while not stop.is_set():
            if self.poll(until_ended=until_ended, on_tick=on_tick):
                return
            stop.wait(self.settings.cadence.poll_interval_s)

    def poll(
        self,
        *,
        until_ended: bool = True,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
    ) -> bool:
        """Look at the run once (one ``stat`` of the metrics file) and tick when it grew
        since the last look; whether the watch is over: (with ``until_ended``) the training
        has ended and its last metrics were read. A failed tick is logged, never raised.

        Raises:
            AutopilotError: the run directory was deleted (or replaced by another).

        The kernel flushes its last metrics before it marks itself closed, so the end is
        checked before the file's size: a size read afterwards includes the last flush."""
        self._check_run_dir()
        ended = until_ended and self._training_ended()  # before the size: see above
        size = file_size(self.run_dir / METRICS_FILE)
        if size != self._seen:
            self._seen = self.stats.seen_bytes = size
            self._failures = self._safe_tick(on_tick, self._failures)
            return False
        return ended

    def _safe_tick(self, on_tick: Callable[[dict[str, Any]], None] | None, failures: int) -> int:
        cpu = time.thread_time()
        try:
            state = self.tick()
        except Exception:  # a bug in a node must not end the watch, nor the training
            self._count(cpu)
            failures += 1
            if failures <= 3 or failures % 100 == 0:
                logger.exception("autopilot tick failed (%d in a row); continuing", failures)
            return failures
        self._count(cpu)
        if on_tick is not None:
            on_tick(state)
        return 0

    def _count(self, cpu_at_start: float) -> None:
        stats = self.stats
        stats.ticks += 1
        stats.cpu_s += time.thread_time() - cpu_at_start
        stats.last_tick_at = time.time()

    def _check_run_dir(self) -> None:
        if _identity(self.run_dir) != self._identity:
            raise AutopilotError(
                f"the run directory {self.run_dir} was deleted (or replaced) while the "
                "autopilot watched it; stopping. Start `autopilot watch` again for a new run"
            )

    def _training_ended(self) -> bool:
        try:
            state = read_kernel_state(self.run_dir)
        except Exception:  # a half-written kernel.json from another tool; look again later
            return False
        return state is not None and state.has_ended()

    def close(self) -> None:
        """Write the run's record to memory as it ended; release the database (its WAL
        folded in and truncated) and the lock."""
        try:
            tune_node.close(self.context)  # a trial whose run ended is failed, never left open
        except Exception:
            logger.exception("failing the tuner's open trial failed")
        try:
            self.context.memory.finish()
            self.context.memory.close()
        except Exception:  # memory must not keep the lock held
            logger.exception("writing the run's record to memory failed")
        truncate_wal(self._conn)
        self._conn.close()
        os.close(self._lock_fd)
        self._notify_end()

    def _notify_end(self) -> None:
        """Tell the webhook the run ended (not when only the autopilot stops), then let the
        queued posts go out."""
        notifier = self.context.notifier
        try:
            kernel = read_kernel_state(self.run_dir) if notifier.enabled else None
            if kernel is not None and kernel.has_ended():
                notifier.event("run_end", f"training ended ({kernel.status})", kernel.last_step)
        except Exception:  # a garbled kernel.json: nothing to tell
            logger.exception("notifying the run's end failed")
        notifier.close()

    def __enter__(self) -> Autopilot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """The directory's device and inode (``None`` once it is gone): a directory deleted and
    created again under the same name is another run's."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _thread_of(state_dir: Path) -> str:
    """The graph thread to resume: the one named in ``graph.json`` (left by watchers that
    moved to a new thread every 1000 ticks), when it is a name such a watcher wrote."""
    try:
        meta = read_json(state_dir / "graph.json")
    except Exception:  # a garbled file from another tool: the default thread
        meta = None
    thread = meta.get("thread") if isinstance(meta, dict) else None
    return thread if isinstance(thread, str) and _THREAD.fullmatch(thread) else "autopilot-0"


class BackgroundAutopilot:
    """An ``Autopilot`` ticking in a daemon thread of the training process."""

    def __init__(self, pilot: Autopilot) -> None:
        self.pilot = pilot
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"autopilot[{pilot.run_dir}]", daemon=True
        )

    def _run(self) -> None:
        try:
            self.pilot.run(stop=self._stop, until_ended=False)
        except AutopilotError as exc:  # the run directory went away: the training goes on
            logger.warning("%s", exc)
        finally:
            self.pilot.close()

    def stop(self, timeout: float = 60.0) -> None:
        """Let the current tick finish, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundAutopilot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_background(
    run_dir: str | os.PathLike[str],
    *,
    mode: str,
    settings: Settings | None = None,
    detectors: Sequence[Detector] | None = None,
) -> BackgroundAutopilot:
    """Start the autopilot for ``run_dir`` in a daemon thread; ``stop()`` it at the end
    (``detectors`` as for ``Autopilot``)."""
    pilot = Autopilot(run_dir, mode=mode, settings=settings, detectors=detectors)
    background = BackgroundAutopilot(pilot)
    background._thread.start()
    return background
