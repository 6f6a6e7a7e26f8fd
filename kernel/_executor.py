"""Turns command lines into knob changes and ledger rows.

Every line read from ``commands.jsonl`` (a blank one too) ends as exactly one ledger row (or,
for a command with a future ``apply_at_step``, as a pending entry that later ends as one
row). Nothing in here raises into the training loop: a bad line is ``rejected``, a knob or
save function that throws is ``failed`` and restored to its snapshot.

A change is kept only once its row is written. When the ledger cannot be written (a full
disk), the change is undone and the line waits, with every line after it, until a later
step can write its row: the ledger never misses a change, and a kernel restarted meanwhile
finds the line unanswered and handles it once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kernel._pending import PendingQueue
from kernel.commands import Command, KnobValue, format_value, parse_command_line
from kernel.errors import CommandError, KnobError
from kernel.freeze import RecipeEntry
from kernel.knobs import Knob
from kernel.ledger import Decision, Ledger, command_fields, line_crc
from kernel.lifecycle import segment_mismatch
from kernel.state import FreezeMode, PendingCommand

if TYPE_CHECKING:
    from kernel._rewind import Rewinder
    from kernel.reflexes import Trip

logger = logging.getLogger(__name__)

MAX_PENDING = 1000
"""How many commands may wait for a later ``apply_at_step``; past it one is rejected."""
PENDING_SHOWN = 20
"""How many of the pending commands ``kernel.json`` lists (soonest first)."""


class CommandExecutor:
    """Applies commands to knobs and run operations, recording each in the ledger.

    Args:
        max_pending: how many commands may wait for their ``apply_at_step``.
        retry_interval_s: how often lines whose row could not be written are tried again.
    """

    def __init__(
        self,
        knobs: Mapping[str, Knob],
        ledger: Ledger,
        save_fn: Callable[[int], Any] | None,
        on_applied: Callable[[Knob, str | None], None] | None = None,
        *,
        max_pending: int = MAX_PENDING,
        retry_interval_s: float = 0.25,
        rewinder: Rewinder | None = None,
    ) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        self.knobs, self.ledger, self.save_fn = knobs, ledger, save_fn
        self.on_applied = on_applied
        """Called with the knob and the command id after each applied knob change."""
        self.max_pending, self.retry_interval_s = max_pending, retry_interval_s
        self.rewinder = rewinder
        """Takes snapshots and restores one on ``rewind`` (None: rewind is refused)."""
        self._pending = PendingQueue()
        self._unrecorded: list[tuple[int | None, str, int | None]] = []
        """Lines (offset, text, checksum) whose row could not be written yet, oldest first."""
        self._retry_at = 0.0
        self.freeze: FreezeMode = "off"
        self.paused = False
        self.stopping = False

    @property
    def pending(self) -> PendingQueue:
        return self._pending

    @pending.setter
    def pending(self, items: Iterable[PendingCommand]) -> None:
        self._pending = PendingQueue(items)

    # -- arrival ---------------------------------------------------------------------------
    def accept(self, offset: int, text: str, step: int | None) -> None:
        """Handle one new line of ``commands.jsonl`` read at ``step``."""
        crc = line_crc(text)
        if self.ledger.answered(offset, crc):
            return  # answered before a restart, or kept at the start of a truncated file
        if self._unrecorded:  # keep the ledger in the order of the file
            self._unrecorded.append((offset, text, crc))
            return
        self._handle(offset, text, crc, step)

    def _handle(self, offset: int | None, text: str, crc: int | None, step: int | None) -> None:
        try:
            try:
                self._accept(offset, text, crc, step)
            except OSError:
                raise
            except Exception as exc:  # a bug must cost one line, not the batch or the run
                self._record_crash(step, offset, crc, None, exc)
        except OSError as exc:
            self._hold(offset, text, crc, exc)

    def _hold(self, offset: int | None, text: str, crc: int | None, exc: OSError) -> None:
        if not self._unrecorded:
            logger.warning(
                "the ledger cannot be written (%s): the command line at byte %s and those "
                "after it wait, unapplied, until their rows can be written; training goes on",
                exc,
                offset,
            )
        self._unrecorded.append((offset, text, crc))
        self._retry_at = time.monotonic() + self.retry_interval_s

    def _accept(self, offset: int | None, text: str, crc: int | None, step: int | None) -> None:
        where = {"offset": offset, "line_crc": crc}
        if not text.strip():
            reason = "a blank line is not a command; nothing was done"
            self.ledger.record(step=step, decision="rejected", **where, reason=reason)
            return
        try:
            cmd = parse_command_line(text)
        except CommandError as exc:
            self.ledger.record(
                step=step, decision="rejected", **where, reason=exc.reason, **_identity_of(text)
            )
            return
        if cmd.id in self.ledger.handled_ids or self._pending.has_id(cmd.id):
            self.ledger.record(
                step=step,
                decision="rejected",
                **where,
                source=cmd.source,
                command_id=cmd.id,
                reason=f"duplicate command id '{cmd.id}': it was already "
                "handled; send the change again under a new id",
            )
            return
        mismatch = segment_mismatch(cmd, self.ledger.segment)
        if mismatch is not None:
            decision, reason = mismatch
            self.ledger.record(
                step=step,
                decision=decision,
                **where,
                source=cmd.source,
                command_id=cmd.id,
                op=cmd.op,
                knob=cmd.knob,
                reason=reason,
            )
            return
        if cmd.apply_at_step is not None and step is not None and cmd.apply_at_step > step:
            self._wait(offset or 0, crc, cmd, step)
            return
        self.execute(offset, cmd, step, crc)

    def _wait(self, offset: int, crc: int | None, cmd: Command, step: int) -> None:
        if len(self._pending) >= self.max_pending:
            self.ledger.record(
                step=step,
                decision="rejected",
                **command_fields(cmd, offset, crc),
                reason=f"at most {self.max_pending} commands may wait for a later step, and "
                f"{len(self._pending)} do; send this one (for step {cmd.apply_at_step}) again "
                "closer to its step",
            )
            return
        self._pending.push(PendingCommand(offset=offset, command=cmd, line_crc=crc))

    def next_due_step(self) -> int | None:
        return self._pending.next_due_step()

    def has_due(self, step: int) -> bool:
        """Whether ``apply_due(step)`` has work: a due command, or rows to try again."""
        if self._unrecorded and time.monotonic() >= self._retry_at:
            return True
        due = self._pending.next_due_step()
        return due is not None and due <= step

    def apply_due(self, step: int) -> None:
        """Try again the lines whose rows could not be written, then run the due commands."""
        if self._unrecorded and (time.monotonic() < self._retry_at or not self._retry(step)):
            return
        while len(self._pending) and (self._pending.next_due_step() or 0) <= step:
            item = self._pending.pop()
            try:
                self.execute(item.offset, item.command, step, item.line_crc)
            except OSError as exc:
                text = item.command.model_dump_json(exclude_none=True)
                self._hold(item.offset, text, item.line_crc, exc)
                return

    def _retry(self, step: int) -> bool:
        """Handle the waiting lines in order; True when all of them have their rows now."""
        lines, self._unrecorded = self._unrecorded, []
        for i, (offset, text, crc) in enumerate(lines):
            self._handle(offset, text, crc, step)
            if self._unrecorded:  # still failing: the rest keep waiting, in order
                self._unrecorded.extend(lines[i + 1 :])
                return False
        logger.warning("the ledger can be written again: %d waiting line(s) handled", len(lines))
        return True

    def pending_summary(self) -> dict[str, Any]:
        """What ``kernel.json`` says of the pending commands: a bounded summary."""
        return {
            "pending": self._pending.first(PENDING_SHOWN),
            "pending_count": len(self._pending),
            "next_due_step": self._pending.next_due_step(),
        }

    # -- execution -------------------------------------------------------------------------
    def execute(
        self, offset: int | None, cmd: Command, step: int | None, crc: int | None = None
    ) -> None:
        """Apply ``cmd`` now; whatever happens, it ends as one ledger row.

        Raises:
            OSError: when the row could not be written; the change was undone then.
        """
        try:
            self._execute(offset, cmd, step, crc)
        except OSError:
            raise
        except Exception as exc:
            self._record_crash(step, offset, crc, cmd, exc)

    def _record_crash(
        self,
        step: int | None,
        offset: int | None,
        crc: int | None,
        cmd: Command | None,
        exc: Exception,
    ) -> None:
        """Record an unexpected failure (an ``OSError`` writing the row goes to the caller)."""
        logger.exception("handling a command failed unexpectedly; training continues")
        ids = {} if cmd is None else {"command_id": cmd.id, "source": cmd.source, "op": cmd.op}
        try:
            self.ledger.record(
                step=step,
                decision="failed",
                offset=offset,
                line_crc=crc,
                error=_describe(exc),
                **ids,
            )
        except OSError:
            raise
        except Exception:
            logger.exception("could not record the failure in the ledger either")

    def _execute(self, offset: int | None, cmd: Command, step: int | None, crc: int | None) -> None:
        row: dict[str, Any] = command_fields(cmd, offset, crc)
        if cmd.op == "set":
            if self.freeze != "off":
                self.ledger.record(
                    step=step,
                    decision="ignored_freeze",
                    **row,
                    reason=f"the run is frozen ({self.freeze}); knob changes from "
                    "outside are ignored until `freeze off`",
                )
                return
            self.set_knob(
                step, cmd.knob or "", cmd.value, cmd.multiplier, row, cmd.reason, cmd.bounds
            )
        else:
            self._run_op(step, cmd, row)

    def replay(self, step: int, entry: RecipeEntry, command_id: str) -> None:
        row = {"command_id": command_id, "source": "replay", "op": "set", "knob": entry.knob}
        self.set_knob(step, entry.knob, entry.value, None, row, f"recipe step {entry.step}")

    def set_knob(
        self,
        step: int | None,
        name: str,
        value: KnobValue | None,
        multiplier: float | None,
        row: dict[str, Any],
        reason: str | None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        knob = self.knobs.get(name)
        if knob is None:
            known = ", ".join(sorted(self.knobs)) or "none"
            self.ledger.record(
                step=step,
                decision="rejected",
                **row,
                reason=f"unknown knob '{name}'; this run's knobs are: {known}",
            )
            return
        try:
            target = knob.resolve(value, multiplier)
        except KnobError as exc:
            self.ledger.record(step=step, decision="rejected", **row, reason=exc.reason)
            return
        except Exception as exc:  # a custom knob's getter may throw anything
            error = f"could not read {name} to resolve the change: {_describe(exc)}"
            self.ledger.record(step=step, decision="failed", **row, error=error)
            return
        outside = _outside(name, target, bounds)
        if outside is not None:
            before = _value_or_none(knob)
            self.ledger.record(step=step, decision="rejected", **row, before=before, reason=outside)
            return
        self._change(step, knob, target, row, reason)

    def _change(
        self,
        step: int | None,
        knob: Knob,
        target: KnobValue,
        row: dict[str, Any],
        reason: str | None,
    ) -> None:
        try:
            before, snap = knob.get(), knob.snapshot()
        except Exception as exc:
            error = f"could not read {knob.name} before changing it: {_describe(exc)}"
            self.ledger.record(step=step, decision="failed", **row, error=error)
            return
        try:
            knob.set(target)
            after = knob.get()
        except Exception as exc:  # a custom knob may throw anything; training goes on
            error = _describe(exc)
            error += _restore(knob, snap)
            logger.warning("knob %s failed to change: %s", knob.name, error)
            self.ledger.record(step=step, decision="failed", **row, before=before, error=error)
            return
        try:
            self.ledger.record(
                step=step, decision="applied", **row, before=before, after=after, reason=reason
            )
        except OSError:  # no row, no change: it is tried again once the ledger has room
            _restore(knob, snap)
            raise
        if self.on_applied is not None:
            try:
                self.on_applied(knob, row.get("command_id"))
            except Exception:  # bookkeeping; the change itself took and is recorded
                logger.exception("noting the change of %s failed", knob.name)

    def _run_op(self, step: int | None, cmd: Command, row: dict[str, Any]) -> None:
        if cmd.op == "rewind":
            self._rewind(step, cmd, row)
            return
        if cmd.op == "checkpoint":
            self._checkpoint(step, row, cmd.reason)
            return
        if cmd.op == "resume" and not self.paused:
            self.ledger.record(
                step=step, decision="rejected", **row, reason="the run is not paused"
            )
            return
        self.ledger.record(step=step, decision="applied", **row, reason=cmd.reason)  # row first
        if cmd.op == "stop":
            self.stopping, self.paused = True, False
        else:
            self.paused = cmd.op == "pause"

    def _rewind(self, step: int | None, cmd: Command, row: dict[str, Any]) -> None:
        """Restore a snapshot; a frozen run keeps its state (a rewind moves its knobs too)."""
        if self.freeze != "off":
            reason = f"the run is frozen ({self.freeze}); a rewind is ignored until `freeze off`"
            self.ledger.record(step=step, decision="ignored_freeze", **row, reason=reason)
            return
        if self.rewinder is None:
            reason = "this kernel keeps no snapshots, so there is nothing to rewind to"
            self.ledger.record(step=step, decision="rejected", **row, reason=reason)
            return
        for name in self.rewinder.rewind(step, cmd, self.ledger, row):
            if self.on_applied is not None and name in self.knobs:
                try:
                    self.on_applied(self.knobs[name], row.get("command_id"))
                except Exception:  # bookkeeping; the rewind itself took and is recorded
                    logger.exception("noting the rewind of %s failed", name)

    def reflex(self, step: int, trip: Trip, vouched: int | None, action: str) -> bool:
        """Answer a reflex's trip at ``step``;
        True if the state was rewound. Under a freeze, or with ``action="record"``, the trip
        is only recorded; without a vouched snapshot it is recorded as rejected."""
        reason = trip.describe()
        row: dict[str, Any] = {
            "command_id": f"reflex-{self.ledger.segment}-{step}",
            "source": "kernel",
            "op": "rewind",
            "intent": "rewind",
            "for_diagnosis": "divergence",
            "reflex": trip,
        }
        found = None if self.rewinder is None else self.rewinder.vouched(vouched)
        refusal: tuple[Decision, str] | None = None
        if self.freeze != "off":
            refusal = "ignored_freeze", f"the run is frozen ({self.freeze}); the reflex records"
        elif action == "record":
            refusal = "noted", "reflex_action='record': the trip is recorded, nothing restored"
        elif found is None:
            kept = "" if self.rewinder is None else f"; kept: {self.rewinder.kept()}"
            refusal = "rejected", f"no snapshot from before the trip (step {vouched}){kept}"
        if refusal is not None:
            decision, why = refusal
            try:
                self.ledger.record(step=step, decision=decision, **row, reason=f"{reason}; {why}")
            except OSError as exc:
                logger.warning("a reflex tripped at step %s (%s); row lost: %s", step, reason, exc)
            return False
        assert self.rewinder is not None and found is not None
        moved = self.rewinder.rewind_to(found, step, self.ledger, row, reason, row_first=False)
        for name in moved:
            if self.on_applied is not None and name in self.knobs:
                try:
                    self.on_applied(self.knobs[name], row["command_id"])
                except Exception:
                    logger.exception("noting the rewind of %s failed", name)
        return True

    def _checkpoint(self, step: int | None, row: dict[str, Any], reason: str | None) -> None:
        if self.save_fn is None:
            self.ledger.record(
                step=step,
                decision="rejected",
                **row,
                reason="no save function: pass save_fn=... to Kernel to enable checkpoint commands",
            )
            return
        try:
            self.save_fn(step if step is not None else -1)
        except Exception as exc:  # the user's save function; record it and keep training
            logger.warning("checkpoint at step %s failed: %s", step, exc)
            self.ledger.record(step=step, decision="failed", **row, error=_describe(exc))
            return
        self.ledger.record(step=step, decision="applied", **row, reason=reason)


def _outside(name: str, target: KnobValue, bounds: tuple[float, float] | None) -> str | None:
    """Why ``target`` breaks the bounds a command was judged under, or None when it holds."""
    if bounds is None or isinstance(target, bool):
        return None
    lo, hi = bounds
    values = target if isinstance(target, list) else [target]
    if all(lo <= v <= hi for v in values):
        return None
    return (
        f"{name} must be within [{lo:g}, {hi:g}] (the bounds this command was judged under), "
        f"got {format_value(target)}"
    )


def _value_or_none(knob: Knob) -> KnobValue | None:
    try:
        return knob.get()
    except Exception:  # a custom getter; the row is still worth writing
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _restore(knob: Knob, snapshot: Any) -> str:
    try:
        knob.restore(snapshot)
        return ""
    except Exception as exc:
        logger.error("knob %s could not be restored after a failed change: %s", knob.name, exc)
        return f"; restoring the previous value failed too: {_describe(exc)}"


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate: JSON readers would refuse the ledger row
        return False


def _identity_of(text: str) -> dict[str, Any]:
    """Best-effort id and source of a malformed line, so its ledger row can be traced."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    found: dict[str, Any] = {}
    if isinstance(raw.get("id"), str) and 0 < len(raw["id"]) <= 200 and _is_unicode(raw["id"]):
        found["command_id"] = raw["id"]
    if raw.get("source") in ("human", "rules", "ai", "tune", "replay", "api"):
        found["source"] = raw["source"]
    return found
