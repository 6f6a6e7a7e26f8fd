"""What the guards know about a run: its step, knobs, freeze mode and change history.

``GuardContext.build`` makes one from data already read (the kernel's state, the ledger's
rows, the freeze mode, the changes measured as improvements), so a tick that has read the
run directory once can hand it over; ``GuardContext.from_run`` reads those files itself.

The change history also feeds the cumulative guard: ``GuardContext.drift`` is how far the
autopilot's own changes have moved a knob family, from the value it started at, since a
person last set it or a change of it was measured better (within a window of steps).

Example:
    >>> from kernel import KnobSpec, LedgerRow
    >>> rows = [LedgerRow(seq=n, step=100 * n, wall_time=0.0, decision="applied", op="set",
    ...                   source="rules", knob="lr", before=0.1 / 2 ** (n - 1),
    ...                   after=0.1 / 2**n, command_id=f"c{n}") for n in (1, 2, 3)]
    >>> ctx = GuardContext(step=400, knobs={}, history=tuple(rows))
    >>> d = ctx.drift("lr", window_steps=1000)
    >>> d.factor, d.changes, d.since_step, d.start
    (0.125, 3, 100, 0.1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from autopilot.errors import AutopilotError
from kernel import (
    KernelState,
    KnobSpec,
    KnobValue,
    LedgerRow,
    SnapshotInfo,
    read_freeze,
    read_kernel_state,
    read_ledger,
)
from kernel.knobs import knob_family

AUTOPILOT_SOURCES: frozenset[str] = frozenset({"rules", "ai", "tune"})
"""Ledger sources that are the autopilot's own changes (not a person's, not a replay's)."""


def by_autopilot(row: LedgerRow) -> bool:
    """Whether ``row``'s change was the autopilot's idea: sent by it, or proposed by it and
    approved unchanged by a person (``source="human"``, ``proposed_by`` the proposer). Such
    a change is measured, cooled down and learned from as the autopilot's; who *ordered* a
    change is ``row.source``.

    Example:
        >>> by_autopilot(LedgerRow(seq=1, wall_time=0.0, decision="applied",
        ...                        source="human", proposed_by="rules"))
        True
    """
    return row.source in AUTOPILOT_SOURCES or row.proposed_by in AUTOPILOT_SOURCES


@dataclass(frozen=True, kw_only=True)
class Drift:
    """How far the autopilot's own changes have moved one knob family."""

    factor: float = 1.0
    """The product of their factors (``0.125`` after three halvings)."""
    changes: int = 0
    since_step: int | None = None
    """The step of the first of those changes."""
    start: KnobValue | None = None
    """The value before the first of those changes."""


@dataclass(frozen=True, kw_only=True)
class GuardContext:
    """What the guards know about the run: its step, knobs, freeze mode and change history."""

    step: int
    knobs: dict[str, KnobSpec]
    freeze: str = "off"
    segment: int | None = None
    """The run segment (``kernel.json``): the commands the guards pass are meant for it."""
    last_change_step: dict[str, int] = field(default_factory=dict)
    """Per knob, the step of its last applied change from any source (humans included)."""
    last_autopilot_step: int | None = None
    """The step of the last applied change that was the autopilot's idea (``by_autopilot``:
    from ``rules``, ``ai`` or ``tune``, or proposed by one and approved unchanged)."""
    history: tuple[LedgerRow, ...] = ()
    """This segment's applied ``set`` rows, oldest first (for the cumulative guard)."""
    improved: frozenset[str] = frozenset()
    """Ids of the commands whose measured effect was ``better``."""
    worse: frozenset[str] = frozenset()
    """Ids of the commands whose measured effect was ``worse``: their values are condemned
    (a rollback never restores one)."""
    diagnosed: tuple[str, ...] = ()
    """The diagnosis kinds found when the proposal was made (the detectors'): the direction
    guard holds them along with the proposal's own ``kind``."""
    snapshots: tuple[SnapshotInfo, ...] = ()
    """The snapshots the kernel keeps (``kernel.json``), which a rewind can name."""
    last_rewind_step: int | None = None
    """The step of this segment's latest applied rewind (a command's or a reflex's)."""
    logged_peak: dict[str, float] = field(default_factory=dict)
    """Per knob the run logs as a metric of the same name (``lr``), the largest value it
    logged: the ceiling of an action that ``restores`` a value the run trained at."""

    @classmethod
    def build(
        cls,
        state: KernelState,
        rows: Iterable[LedgerRow],
        freeze: str = "off",
        *,
        improved: Iterable[str] = (),
        worse: Iterable[str] = (),
        diagnosed: Iterable[str] = (),
        step: int | None = None,
        last_rewind_step: int | None = None,
        logged_peak: dict[str, float] | None = None,
    ) -> GuardContext:
        """A context from data already read.

        Args:
            state: the run's ``kernel.json``.
            rows: the ledger's rows (any decision; only this segment's applied changes
                count). They should reach back ``guards.total_window_steps``.
            freeze: the mode in ``freeze.json``; the kernel's own mode wins while it is on.
            improved: ids of the commands measured ``better``.
            worse: ids of the commands measured ``worse``.
            diagnosed: the diagnosis kinds the proposal answers (the detectors').
            step: the run's step when fresher than ``kernel.json``'s (which lags by up to a
                heartbeat); the later of the two is used.
            last_rewind_step: the latest rewind when ``rows`` may not reach it (the tick's
                rows are ``set`` rows only); the later of it and the rows' is used.
        """
        segment = state.segment
        rows = list(rows)
        rewinds = [
            int(r.step)
            for r in rows
            if r.decision == "applied"
            and r.op == "rewind"
            and r.step is not None
            and (r.segment or 0) == segment
        ]
        if last_rewind_step is not None:
            rewinds.append(last_rewind_step)
        changes = tuple(
            r
            for r in rows
            if r.decision == "applied"
            and r.op == "set"
            and r.knob is not None
            and r.step is not None
            and (r.segment or 0) == segment
        )
        last: dict[str, int] = {}
        for row in changes:
            last[str(row.knob)] = max(last.get(str(row.knob), 0), int(row.step or 0))
        auto = [int(r.step or 0) for r in changes if by_autopilot(r)]
        return cls(
            step=max(state.last_step or 0, step or 0),
            knobs={k.name: k for k in state.knobs},
            freeze=state.freeze if state.freeze != "off" else freeze,
            segment=segment,
            last_change_step=last,
            last_autopilot_step=max(auto, default=None),
            history=changes,
            improved=frozenset(improved),
            worse=frozenset(worse),
            diagnosed=tuple(dict.fromkeys(diagnosed)),
            snapshots=tuple(state.snapshots),
            last_rewind_step=max(rewinds, default=None),
            logged_peak=dict(logged_peak or {}),
        )

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> GuardContext:
        """Read ``kernel.json``, ``freeze.json``, the ledger and the measured effects.

        Raises:
            AutopilotError: when no kernel has started in ``run_dir`` yet.
        """
        state = read_kernel_state(run_dir)
        if state is None:
            raise AutopilotError(
                f"no kernel has started in {run_dir} yet, so its knobs are unknown; "
                "start the training first"
            )
        from autopilot.decisions import DecisionLog  # decisions imports the guards' Verdict

        log = DecisionLog(run_dir)
        return cls.build(
            state,
            read_ledger(run_dir),
            read_freeze(run_dir).mode,
            improved=log.improved_commands(),
            worse=log.worse_commands(),
        )

    def drift(self, family: str, window_steps: int) -> Drift:
        """How far the autopilot moved ``family`` within the last ``window_steps`` steps,
        counted from the last change by a person or the last change measured better."""
        drift = Drift()
        for row in self.history:
            if knob_family(str(row.knob)) != family or int(row.step or 0) <= (
                self.step - window_steps
            ):
                continue
            if not by_autopilot(row) or row.command_id in self.improved:
                # a person took charge (their own change, or an edited proposal), or the
                # change helped: start afresh. An approved unchanged proposal still counts.
                drift = Drift()
                continue
            factor = change_factor(row.before, row.after)
            if factor is None:
                continue
            drift = Drift(
                factor=drift.factor * factor,
                changes=drift.changes + 1,
                since_step=drift.since_step if drift.changes else row.step,
                start=drift.start if drift.changes else row.before,
            )
        return drift

    def condemned(self, knob: str, value: KnobValue | None) -> LedgerRow | None:
        """The applied change of ``knob``'s family, measured worse, that set it to ``value``
        (so restoring ``value`` would bring that change back), or ``None``."""
        return condemned_by(self.history, self.worse, knob, value)


def condemned_by(
    rows: Iterable[LedgerRow], worse: frozenset[str], knob: str, value: KnobValue | None
) -> LedgerRow | None:
    """The last of ``rows`` (applied changes) measured worse (``worse`` holds their command
    ids) that set ``knob``'s family to ``value``, or ``None``. The one home of "a value whose
    change was measured worse": the guards and the measured effects' rollback use it."""
    family = knob_family(knob)
    found = None
    for row in rows:
        if (
            row.command_id in worse
            and row.knob is not None
            and knob_family(row.knob) == family
            and _same_value(row.after, value)
        ):
            found = row
    return found


def _same_value(a: KnobValue | None, b: KnobValue | None) -> bool:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a == b
    x = a if isinstance(a, list) else [a]
    y = b if isinstance(b, list) else [b]
    return len(x) == len(y) and all(
        math.isclose(p, q, rel_tol=1e-9) for p, q in zip(x, y, strict=True)
    )


def change_factor(before: KnobValue | None, after: KnobValue | None) -> float | None:
    """``after / before`` (the geometric mean over param groups); ``None`` for a toggle, a
    change from 0 or values that do not pair up."""
    if isinstance(before, bool) or isinstance(after, bool) or before is None or after is None:
        return None
    b = before if isinstance(before, list) else [before]
    a = after if isinstance(after, list) else [after]
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        return None
    n = max(len(a), len(b))
    pairs = list(zip(b * n if len(b) == 1 else b, a * n if len(a) == 1 else a, strict=True))
    ratios = [y / x for x, y in pairs if x != 0 and y / x > 0]
    if len(ratios) != len(pairs):
        return None
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


__all__ = [
    "AUTOPILOT_SOURCES",
    "Drift",
    "GuardContext",
    "by_autopilot",
    "change_factor",
    "condemned_by",
]
