"""The review queue: proposals that wait for a person (modes ``suggest`` and ``ai_suggest``).

``RUN_DIR/autopilot/review.jsonl`` is an append-only log of events (``proposed``,
``approved``, ``rejected``, ``expired``, ``applied``); an item's state is the fold of its
events. Two more states are computed when reading: a pending item past its
``expires_after_step`` is ``expired``, and an approved item whose commands the kernel's
ledger shows as applied is ``applied``.

Every transition runs read-fold-check-append under an exclusive ``flock`` on
``autopilot/review.lock``, so the CLI and the autopilot's watcher never both decide the same
item. Approving re-runs the guards on the run as it is now: an approval (edited or not)
cannot get past bounds, caps or cooldowns that the proposal met when it was made. The
commands say what they are for as data (``decision_id``, ``for_diagnosis``, the run
``segment``); every command an approval sends has source ``human`` (the person ordered
it), and an action approved unchanged names its proposer in ``proposed_by`` (an action the
person edited is their own: ``proposed_by`` None). A run whose kernel
has closed approves nothing. A proposal identical to a pending one (the same actions) is
merged into it (a ``merged`` event) instead of being queued again. The file is untrusted
input: an invalid or torn line is skipped (reported once) and never moves an item's state
backwards, since an item whose commands are in ``commands.jsonl`` reads as approved.

Example:
    >>> queue = ReviewQueue(run_dir, settings)  # doctest: +SKIP
    >>> item = queue.add(queue.new_item(step=900, proposal=p, verdicts=v))  # doctest: +SKIP
    >>> queue.approve(item.id[:6]).commands[0].id  # doctest: +SKIP
    'ai-rv-1a2b3c4d5e6f-0'
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopilot.config import Settings
from autopilot.decisions import AUTOPILOT_DIR
from autopilot.diagnoses import Diagnosis
from autopilot.errors import ReviewError
from autopilot.guard_context import AUTOPILOT_SOURCES
from autopilot.guards import GuardContext, Verdict, check, commands_for
from autopilot.proposals import Action, Proposal
from autopilot.tokens import Usage, fold_flat_usage
from kernel import Command, KernelState, append_command, read_kernel_state, read_ledger
from kernel.commands import COMMANDS_FILE
from kernel.jsonl import append_line, read_models

logger = logging.getLogger(__name__)

REVIEW_FILE = "review.jsonl"
LOCK_FILE = "review.lock"
ReviewStatus = Literal["pending", "approved", "rejected", "expired", "applied"]
EventKind = Literal["proposed", "merged", "approved", "rejected", "expired", "applied"]
_NEXT: dict[str, set[str]] = {
    "pending": {"merged", "approved", "rejected", "expired", "applied"},
    "approved": {"applied"},
}
"""The recorded transitions; any other event on an item is ignored when folding. ``applied``
on a pending item means its ``approved`` line was lost (torn): the state never goes back."""


class ReviewItem(BaseModel):
    """A proposal waiting for (or past) a person's decision."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=150)
    step: int
    created_at: float
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    proposal: Proposal
    verdicts: list[Verdict] = Field(default_factory=list)
    """The guards' verdicts when the proposal was made."""
    usage: Usage = Field(default_factory=Usage)
    """What getting the proposal consumed and cost (the proposal's usage)."""
    status: ReviewStatus = "pending"
    expires_after_step: int
    decided_at: float | None = None
    decided_step: int | None = None
    why: str | None = None
    edits: list[Action] = Field(default_factory=list)
    approval_verdicts: list[Verdict] = Field(default_factory=list)
    """The guards' verdicts when it was approved (on the edited proposal)."""
    command_ids: list[str] = Field(default_factory=list)
    applied_step: int | None = None
    merged_ids: list[str] = Field(default_factory=list)
    """Later decisions that proposed the same actions while this item was pending."""
    merged_steps: list[int] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flat_usage(cls, data: Any) -> Any:
        return fold_flat_usage(data)  # queue files written before items had a usage

    def approved_actions(self) -> list[Action]:
        """What was approved and sent (an edited action as edited), else what was proposed."""
        if self.approval_verdicts:
            return [v.requested for v in self.approval_verdicts if v.passed]
        return list(self.proposal.actions)


class ReviewEvent(BaseModel):
    """One line of ``review.jsonl``: an item proposed, or a transition of one."""

    model_config = ConfigDict(extra="ignore")

    event: EventKind
    id: str
    at: float = Field(default_factory=time.time)
    step: int | None = None
    item: ReviewItem | None = None
    why: str | None = None
    edits: list[Action] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(default_factory=list)
    command_ids: list[str] = Field(default_factory=list)
    merged_id: str | None = None
    """For ``merged``: the id of the decision whose identical proposal was merged."""
    expires_after_step: int | None = None
    """For ``merged``: the item now expires after this step (the later proposal's expiry)."""

    @model_validator(mode="after")
    def _proposed_has_item(self) -> ReviewEvent:
        if self.event == "proposed" and (self.item is None or self.item.id != self.id):
            raise ValueError("a 'proposed' event needs the item, with the same id")
        return self

    def apply_to(self, item: ReviewItem) -> ReviewItem:
        """``item`` after this transition."""
        if self.event == "applied":
            return item.model_copy(update={"status": "applied", "applied_step": self.step})
        if self.event == "merged":
            return item.model_copy(
                update={
                    "merged_ids": [*item.merged_ids, self.merged_id or ""],
                    "merged_steps": [*item.merged_steps, self.step or 0],
                    "expires_after_step": max(
                        item.expires_after_step, self.expires_after_step or 0
                    ),
                }
            )
        update: dict[str, Any] = {"status": self.event, "decided_at": self.at}
        update["decided_step"] = self.step
        if self.event == "approved":
            update |= {"edits": self.edits, "approval_verdicts": self.verdicts}
            update["command_ids"] = self.command_ids
        elif self.event == "rejected":
            update["why"] = self.why
        return item.model_copy(update=update)


def read_events(path: Path) -> list[ReviewEvent]:
    """The valid events of a review file, oldest first; torn or invalid lines are skipped."""
    return read_models(path, ReviewEvent)


def fold(events: Iterable[ReviewEvent]) -> dict[str, ReviewItem]:
    """Each item's recorded state: its ``proposed`` event, then its valid transitions."""
    items: dict[str, ReviewItem] = {}
    for event in events:
        if event.event == "proposed" and event.item is not None:
            items.setdefault(event.id, event.item)
        elif event.id in items and event.event in _NEXT.get(items[event.id].status, ()):
            items[event.id] = event.apply_to(items[event.id])
    return items


@dataclass(frozen=True, kw_only=True)
class Approval:
    """The outcome of ``ReviewQueue.approve``: the item, the guards' verdicts, the commands."""

    item: ReviewItem
    verdicts: list[Verdict]
    commands: list[Command]


class ReviewQueue:
    """A run's review queue.

    Args:
        run_dir: the run directory.
        settings: the guards re-run on approval, and ``review.expire_after_steps``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], settings: Settings | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.settings = settings or Settings()
        self.path = self.run_dir / AUTOPILOT_DIR / REVIEW_FILE
        self._lock_path = self.run_dir / AUTOPILOT_DIR / LOCK_FILE

    def new_item(
        self,
        *,
        step: int,
        proposal: Proposal,
        verdicts: Sequence[Verdict],
        diagnoses: Sequence[Diagnosis] = (),
        item_id: str | None = None,
    ) -> ReviewItem:
        """A pending item that expires ``review.expire_after_steps`` after ``step``."""
        return ReviewItem(
            id=item_id or f"rv-{uuid.uuid4().hex[:12]}",
            step=step,
            created_at=time.time(),
            diagnoses=list(diagnoses),
            proposal=proposal,
            verdicts=list(verdicts),
            usage=proposal.usage,
            expires_after_step=step + self.settings.review.expire_after_steps,
        )

    def add(self, item: ReviewItem) -> ReviewItem:
        """Queue ``item`` and return it; or, when a pending item proposes the same actions,
        merge it into that one and return that one. Adding an id that is already queued
        (or merged) returns the item that holds it."""
        with self._locked():
            recorded = self._recorded()
            existing = [i for i in recorded if item.id in (i.id, *i.merged_ids)]
            if existing:
                return existing[0]
            twin = _pending_twin(recorded, item)
            if twin is not None:
                merged = ReviewEvent(
                    event="merged",
                    id=twin.id,
                    step=item.step,
                    merged_id=item.id,
                    expires_after_step=item.expires_after_step,
                )
                self._append(merged)
                return merged.apply_to(twin)
            pending = item.model_copy(update={"status": "pending"})
            self._append(ReviewEvent(event="proposed", id=item.id, step=item.step, item=pending))
            return pending

    def items(self, current_step: int | None = None) -> list[ReviewItem]:
        """Every item, oldest first, with its current status.

        Args:
            current_step: the run's step for expiry; ``None``: the last step in kernel.json.
        """
        step, applied = self._step(current_step), self._applied_ids()
        return [_current(i, step, applied) for i in self._recorded()]

    def get(self, item_id: str, current_step: int | None = None) -> ReviewItem:
        """The item with id ``item_id``, or the only one whose id starts with it.

        Raises:
            ReviewError: when no item, or more than one, matches.
        """
        return _find(self.items(current_step), item_id)

    def approve(
        self,
        item_id: str,
        *,
        edits: Sequence[Action] | None = None,
        current_step: int | None = None,
    ) -> Approval:
        """Re-check the (edited) proposal with the guards and queue its commands.

        Args:
            item_id: the item's id or a unique prefix.
            edits: actions replacing the proposal's action on the same knob (or added).
            current_step: the run's step; ``None``: the last step in kernel.json.

        Raises:
            ReviewError: when the item is unknown, decided or expired, the run is closed,
                or the guards reject every action now (the item stays pending).
        """
        with self._locked():
            item = self._pending(item_id, current_step)
            _refuse_closed(self.run_dir, read_kernel_state(self.run_dir), item.id)
            ctx = GuardContext.from_run(self.run_dir)
            ctx = replace(ctx, diagnosed=tuple(d.kind for d in item.diagnoses))
            if current_step is not None:
                ctx = replace(ctx, step=current_step)
            proposal, edited = _edited(item.proposal, edits or ())
            verdicts = check(proposal, ctx, self.settings, by_person=edited)
            commands = self._commands(item, verdicts, edited, ctx.segment)
            if not commands:
                raise ReviewError(_all_rejected(item.id, verdicts))
            for command in commands:
                append_command(self.run_dir, command)
            event = ReviewEvent(
                event="approved",
                id=item.id,
                step=ctx.step,
                edits=list(edits or ()),
                verdicts=verdicts,
                command_ids=[c.id for c in commands],
            )
            self._append(event)
        return Approval(item=event.apply_to(item), verdicts=verdicts, commands=commands)

    def reject(
        self, item_id: str, why: str | None = None, *, current_step: int | None = None
    ) -> ReviewItem:
        """Decide against a pending item; ``why`` is kept with it.

        Raises:
            ReviewError: when the item is unknown, decided or expired.
        """
        with self._locked():
            item = self._pending(item_id, current_step)
            event = ReviewEvent(
                event="rejected", id=item.id, step=self._step(current_step), why=why
            )
            self._append(event)
        return event.apply_to(item)

    def expire_due(self, current_step: int) -> list[ReviewItem]:
        """Record ``expired`` for each pending item past its expiry; return those items."""
        done = []
        with self._locked():
            for item in self._recorded():
                if item.status == "pending" and current_step > item.expires_after_step:
                    event = ReviewEvent(event="expired", id=item.id, step=current_step)
                    self._append(event)
                    done.append(event.apply_to(item))
        return done

    def note_applied(self) -> list[ReviewItem]:
        """Record ``applied`` for each approved item the kernel has applied; return them."""
        done = []
        with self._locked():
            applied = self._applied_ids()
            for item in self._recorded():
                if item.status == "approved" and applied.intersection(item.command_ids):
                    event = ReviewEvent(event="applied", id=item.id, step=self._step(None))
                    self._append(event)
                    done.append(event.apply_to(item))
        return done

    # -- internals -------------------------------------------------------------------------
    def _commands(
        self, item: ReviewItem, verdicts: list[Verdict], edited: set[int], segment: int | None
    ) -> list[Command]:
        """The commands of an approval, each ordered by a person (source ``human``). An
        action approved unchanged stays the proposer's idea (``proposed_by``: it is measured,
        cooled down and learned from as the autopilot's change); an action the person
        edited is their own (``proposed_by`` None)."""
        kind = item.proposal.kind or next((d.kind for d in item.diagnoses), None)
        common: dict[str, Any] = {
            "proposal_id": item.id,
            "reason_prefix": f"approved in review {item.id}",
            "decision_id": item.id,
            "for_diagnosis": kind,
            "segment": segment,
        }
        proposer = item.proposal.proposer
        by = proposer if proposer in AUTOPILOT_SOURCES else None
        return [
            command
            for v in verdicts
            for command in commands_for(
                [v], source="human", proposed_by=None if v.index in edited else by, **common
            )
        ]

    def _pending(self, item_id: str, current_step: int | None) -> ReviewItem:
        """The pending item ``item_id``; an expiry found here is recorded before refusing."""
        step = self._step(current_step)
        recorded = _find(self._recorded(), item_id)
        item = _current(recorded, step, set())
        if item.status == "expired" and recorded.status == "pending":
            self._append(ReviewEvent(event="expired", id=item.id, step=step))
        if item.status != "pending":
            raise ReviewError(_not_pending(item, step))
        return item

    def _step(self, current_step: int | None) -> int | None:
        if current_step is not None:
            return current_step
        state = read_kernel_state(self.run_dir)
        return None if state is None else state.last_step

    def _recorded(self) -> list[ReviewItem]:
        """Each item as its events say, and approved when its commands were sent: an
        approval queues its commands before its event, so a lost (torn) ``approved`` line
        never makes an item pending again."""
        sent = _sent_by_item(self.run_dir)
        return [_recover(i, sent.get(i.id, [])) for i in fold(read_events(self.path)).values()]

    def _applied_ids(self) -> set[str]:
        rows = read_ledger(self.run_dir)
        return {r.command_id for r in rows if r.decision == "applied" and r.command_id}

    def _append(self, event: ReviewEvent) -> None:
        append_line(self.path, event.model_dump_json(exclude_none=True))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _current(item: ReviewItem, step: int | None, applied: set[str]) -> ReviewItem:
    """``item`` with the statuses that are computed, not recorded: expired and applied."""
    if item.status == "pending" and step is not None and step > item.expires_after_step:
        return item.model_copy(update={"status": "expired"})
    if item.status == "approved" and applied.intersection(item.command_ids):
        return item.model_copy(update={"status": "applied"})
    return item


class _Sent(BaseModel):
    """What the review queue reads of a line of ``commands.jsonl``: which item sent it."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=200)
    proposal_id: str | None = Field(default=None, max_length=200)


def _sent_by_item(run_dir: Path) -> dict[str, list[str]]:
    """The ids of the commands in ``commands.jsonl``, by the proposal that sent them."""
    sent: dict[str, list[str]] = {}
    for line in read_models(run_dir / COMMANDS_FILE, _Sent):
        if line.id is not None and line.proposal_id is not None:
            sent.setdefault(line.proposal_id, []).append(line.id)
    return sent


_RECOVERED: set[str] = set()


def _recover(item: ReviewItem, sent: list[str]) -> ReviewItem:
    """``item`` as approved when its commands were sent but no approval is recorded."""
    if not sent or item.status in ("approved", "applied"):
        return item
    if item.id not in _RECOVERED:  # said once per process, not at every read
        _RECOVERED.add(item.id)
        logger.warning(
            "review item %s reads as %s, but its commands (%s) were sent: it is approved "
            "(its approval line in %s was lost)",
            item.id,
            item.status,
            ", ".join(sent[:3]),
            REVIEW_FILE,
        )
    return item.model_copy(update={"status": "approved", "command_ids": sent})


def _refuse_closed(run_dir: Path, state: KernelState | None, item_id: str) -> None:
    if state is not None and state.has_ended():
        how = (
            state.status if state.status in ("closed", "crashed") else "over (its process is gone)"
        )
        raise ReviewError(
            f"the run in {run_dir} is {how} (its kernel stopped at step "
            f"{state.last_step}): no kernel would apply the commands of {item_id}, so it "
            "was not approved"
        )


def _signature(proposal: Proposal) -> list[str]:
    """The actions of ``proposal`` without their reasons: what makes two proposals the same."""
    return sorted(
        json.dumps([a.knob, a.value, a.multiplier, a.rolls_back, a.op, a.to, a.to_step])
        for a in proposal.actions
    )


def _pending_twin(items: list[ReviewItem], item: ReviewItem) -> ReviewItem | None:
    """The pending item (at ``item``'s step) that proposes exactly ``item``'s actions."""
    wanted = _signature(item.proposal)
    return next(
        (
            i
            for i in items
            if _current(i, item.step, set()).status == "pending"
            and _signature(i.proposal) == wanted
        ),
        None,
    )


def _find(items: list[ReviewItem], item_id: str) -> ReviewItem:
    exact = [i for i in items if i.id == item_id or item_id in i.merged_ids]
    matches = exact or [i for i in items if i.id.startswith(item_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ReviewError(
            f"no proposal '{item_id}' in the review queue; see `autopilot review list`"
        )
    ids = ", ".join(i.id for i in matches[:5])
    raise ReviewError(f"'{item_id}' matches {len(matches)} proposals ({ids}); give more of the id")


def _not_pending(item: ReviewItem, step: int | None) -> str:
    if item.status == "expired":
        now = item.decided_step if step is None else step
        return (
            f"proposal {item.id} expired at step {item.expires_after_step} (the run is at step "
            f"{now}); the autopilot will propose again if the problem persists"
        )
    at = "" if item.decided_step is None else f" at step {item.decided_step}"
    return f"proposal {item.id} was already {item.status}{at}; only a pending one can be decided"


def _all_rejected(item_id: str, verdicts: list[Verdict]) -> str:
    reasons = "; ".join(f"{v.requested.describe()}: {v.reason}" for v in verdicts) or "no actions"
    return (
        f"nothing to approve in {item_id}: the guards reject every action now ({reasons}); "
        "it stays pending, so edit it (--edit KNOB=VALUE) or reject it"
    )


def _edited(proposal: Proposal, edits: Sequence[Action]) -> tuple[Proposal, set[int]]:
    """``proposal`` with each edit replacing the first action on its knob, or appended; and
    the indices of the edited actions."""
    actions = list(proposal.actions)
    edited: set[int] = set()
    for edit in edits:
        if not edit.reason:
            edit = edit.model_copy(update={"reason": "edited in review"})
        at = next((n for n, a in enumerate(actions) if a.knob == edit.knob), None)
        if at is None:
            actions.append(edit)
            at = len(actions) - 1
        else:
            actions[at] = edit
        edited.add(at)
    return proposal.model_copy(update={"actions": actions}), edited
