"""When snapshots are taken, and the ``rewind`` op that restores one.

A snapshot is taken at the safe point (``Kernel.step``): at the first step, then every
``snapshot_every_steps`` steps, and, with ``snapshot_on_best``, at a step whose logged key
metric beats the best snapshot's (at most once per ``snapshot_best_every_steps``). Only a
good state is kept: while a loss (any metric named ``...loss...``), the key metric or the
gradient norm logged since the previous safe point is not finite, no snapshot is taken (a
due one is taken at the first step that is finite again); in a distributed job a due
snapshot is taken only where every rank's readings are finite, so all ranks keep the same.
Logged values are only read (a 0-d CUDA tensor synchronises) when a snapshot is due.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from kernel.commands import Command
from kernel.ledger import Ledger
from kernel.metric_names import GRAD_NORM, is_loss
from kernel.snapshots import Snapshot, SnapshotInfo, SnapshotRing, TrainingState

logger = logging.getLogger(__name__)


class Rewinder:
    """Takes snapshots on their cadence and rewinds to one on a ``rewind`` command.

    Args:
        state: what a snapshot covers.
        every: a snapshot every this many steps; 0 turns snapshots off.
        keep: how many cadence snapshots are kept (the best one is kept besides).
        best_every: with a key metric, a snapshot at a new best at most this often (0: off).
        key_metric: the metric whose best is snapshotted, and ``mode`` its direction.
    """

    def __init__(
        self,
        state: TrainingState,
        *,
        every: int,
        keep: int,
        best_every: int,
        key_metric: str | None,
        mode: Any,
        memory_bytes: int = 0,
    ) -> None:
        self.state, self.every, self.best_every = state, every, best_every
        self.key_metric = key_metric
        self.ring = SnapshotRing(keep=keep, mode=mode if key_metric else None)
        self._next_step = 0
        self._taken_at = -1
        self._next_best_step: int | None = None
        self._watched: dict[str, Any] = {}
        self._watches: dict[str, bool] = {}
        """Per metric name, whether its values judge a snapshot (a loss, the key metric,
        the gradient norm)."""
        self._key_at: tuple[int, Any] | None = None
        self.memory_bytes = memory_bytes
        self.off_reason: str | None = None
        """Why snapshots stopped (a memory cap), for ``kernel.json``; None while they run."""
        self._sized = False
        self.rewound_at: int | None = None
        """The step of the latest rewind, and ``rewound_to`` the snapshot's step."""
        self.rewound_to: int | None = None
        self.agree: Callable[[bool], bool] | None = None
        """Distributed: whether every rank's state is good (all ranks call it together)."""
        self.on_restore: Callable[[int], None] | None = None
        """Called with the snapshot's step after each restore (the metrics' marker)."""

    @property
    def on(self) -> bool:
        return self.every > 0

    def observe(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Keep the latest loss-like values logged (references only: nothing is read)."""
        key, watches = self.key_metric, self._watches
        for name, value in metrics.items():
            watched = watches.get(name)
            if watched is None:
                watched = watches[name] = is_loss(name) or name in (GRAD_NORM, key)
            if watched:
                self._watched[name] = value
                if name == key:
                    self._key_at = (step, value)

    def at_safe_point(self, step: int) -> bool:
        """Take a snapshot if one is due at ``step`` and the state is good; True if taken.

        The state is judged by what was logged since the previous safe point (a NaN
        validation loss long past does not block every later snapshot). In a distributed
        job the ranks agree (``agree``) at each due step, so they keep the same snapshots.
        """
        watched, self._watched = self._watched, {}
        if not self.on or self.rewound_at == step:
            return False
        if not self._sized:
            self._fit_memory()
            if not self.on:
                return False
        due = step >= self._next_step or step < self._taken_at  # earlier: numbering restarted
        metric = self._logged_at(step) if due or self._may_be_best(step) else None
        best = metric is not None and self.ring.beats_best(metric)
        if not (due or best):
            return False
        good = _finite(watched)
        if self.agree is not None and due:
            good = self.agree(good)
        if not good:
            return False
        self.ring.add(self.state.capture(step, "cadence" if due else "best", metric))
        self._taken_at = step
        if due:
            self._next_step = step + self.every
        if best:
            self._next_best_step = step + self.best_every
        return True

    def _fit_memory(self) -> None:
        """Keep the ring within ``memory_bytes`` (0: no cap), once the optimizer has its
        state: fewer snapshots kept, or none (with one warning, and the reason published)."""
        if self.memory_bytes <= 0:
            self._sized = True
            return
        if self.state.optimizer is not None and not self.state.optimizer.state:
            return  # Adam's moments appear at its first step: size it then
        self._sized = True
        one = self.state.nbytes()
        fits = self.memory_bytes // max(one, 1)
        cap = f"snapshot_memory_mb={self.memory_bytes / 2**20:g}"
        if fits < 2:  # a cadence snapshot and the best one at least
            self.every = 0
            self.off_reason = (
                f"a snapshot takes {one / 2**20:.0f} MB, more than half of {cap}: snapshots, "
                "rewind and the reflexes' rewinds are off; raise the cap to keep them"
            )
            logger.warning("%s", self.off_reason)
            return
        if fits < self.ring.keep + 1:
            logger.warning(
                "a snapshot takes %.0f MB: %d fit in %s, so %d are kept besides the best",
                one / 2**20,
                fits,
                cap,
                fits - 1,
            )
            self.ring.resize(int(fits) - 1)

    def _may_be_best(self, step: int) -> bool:
        if self.best_every == 0 or self._key_at is None or self._key_at[0] != step:
            return False
        return self._next_best_step is None or step >= self._next_best_step

    def _logged_at(self, step: int) -> float | None:
        """The key metric's finite value logged at ``step`` (None: none was)."""
        if self._key_at is None or self._key_at[0] != step:
            return None
        value = _number(self._key_at[1])
        return value if value is not None and math.isfinite(value) else None

    def listing(self) -> list[SnapshotInfo]:
        return self.ring.listing()

    def select(self, cmd: Command) -> Snapshot | str:
        """The snapshot ``cmd`` rewinds to, or why there is none."""
        if not self.on:
            if self.off_reason is not None:
                return f"no snapshot to rewind to: {self.off_reason}"
            return (
                "snapshots are off (snapshot_every_steps=0), so there is nothing to rewind to; "
                "set KernelSettings(snapshot_every_steps=N) to keep them"
            )
        if not len(self.ring):
            return "no snapshot is kept yet (the first is taken at the first finite step)"
        to = cmd.to or "last"
        if to == "best":
            found = self.ring.best()
            if found is None:
                return (
                    f"no snapshot has a best value of the key metric ({self.key_metric or 'none'}"
                    "); rewind to the last snapshot, --to-step N or --back K instead"
                )
        elif to == "step":
            found = self.ring.at_or_before(cmd.to_step or 0)
            if found is None:
                return (
                    f"no snapshot is kept from step {cmd.to_step} or earlier; kept: {self.kept()}"
                )
        else:
            found = self.ring.last(cmd.back or 1)
            if found is None:
                return (
                    f"back {cmd.back} is past the {len(self.ring)} snapshot(s) kept: {self.kept()}"
                )
        return self.state.check(found) or found

    def kept(self) -> str:
        return ", ".join(f"step {s.step}" for s in self.ring.all())

    def rewind(
        self, step: int | None, cmd: Command, ledger: Ledger, row: dict[str, Any]
    ) -> list[str]:
        """Rewind to the snapshot ``cmd`` names, or record why not; the knobs it moved."""
        found = self.select(cmd)
        if isinstance(found, str):
            ledger.record(step=step, decision="rejected", **row, reason=found)
            return []
        return self.rewind_to(found, step, ledger, row, cmd.reason)

    def rewind_to(
        self,
        found: Snapshot,
        step: int | None,
        ledger: Ledger,
        row: dict[str, Any],
        reason: str | None,
        *,
        row_first: bool = True,
    ) -> list[str]:
        """Restore ``found`` and record it; the knobs it moved.

        With ``row_first`` (a command) the row is written first: an ``OSError`` leaves the
        state untouched, to be tried again. A reflex restores first (protecting the run
        matters more than its record) and only logs a row it could not write.
        """
        before = self.state.knob_values()
        changes = {n: (before[n], v) for n, v in found.knob_values.items() if before.get(n) != v}
        fields = {
            **row,
            "reason": reason,
            "snapshot_step": found.step,
            "restored": self.state.parts(found),
            "knob_changes": changes,
        }
        if row_first:
            ledger.record(step=step, decision="applied", **fields)
        self.restore(found, step)
        if not row_first:
            try:
                ledger.record(step=step, decision="applied", **fields)
            except OSError as exc:
                logger.warning("rewound at step %s, but its ledger row was lost: %s", step, exc)
        return list(changes)

    def vouched(self, step: int | None) -> Snapshot | None:
        """The newest kept snapshot from ``step`` or earlier that can be restored."""
        if step is None or not self.on:
            return None
        found = self.ring.at_or_before(step)
        return None if found is None or self.state.check(found) else found

    def restore(self, snapshot: Snapshot, step: int | None = None) -> list[str]:
        """Restore ``snapshot`` now (what a reflex calls in process); the parts restored."""
        parts = self.state.restore(snapshot)
        self.ring.drop_after(snapshot.step)  # the abandoned trajectory's snapshots
        self.rewound_at, self.rewound_to = step, snapshot.step
        if self.on_restore is not None:
            self.on_restore(snapshot.step)
        if step is not None:
            self._taken_at = step  # later steps continue the numbering; no restart
        logger.info("rewound to the snapshot of step %s at step %s", snapshot.step, step)
        return parts


def _finite(watched: Mapping[str, Any]) -> bool:
    for value in watched.values():
        number = _number(value)
        if number is not None and not math.isfinite(number):
            return False
    return True


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
