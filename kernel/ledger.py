"""The applied ledger (``applied.jsonl``): one row per command the kernel handled.

The ledger is the truth about what happened to a run. Each row says at which step, from
which source, with which decision, and the knob's value before and after. Rows also carry
the byte offset and a checksum of the command line they answer, which is how a restarted
kernel knows which lines it has already handled (a command is applied at most once), even
after ``commands.jsonl`` was truncated and new lines took the old offsets.

A row is written before the change it records is kept: when the append fails (a full disk),
the executor undoes the change and tries again later, so no change is ever without its row.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from kernel.commands import Command, Intent, KnobValue
from kernel.jsonl import append_line, read_models
from kernel.reflexes import Trip

logger = logging.getLogger(__name__)

LEDGER_FILE = "applied.jsonl"
Decision = Literal[
    "applied", "rejected", "ignored_freeze", "failed", "expired", "overridden", "noted"
]
"""``noted``: a reflex tripped and was only recorded (``reflex_action="record"``).
``expired``: a command left over from an earlier run segment, never applied.
``overridden``: the training code moved a knob away from the value the kernel applied
(``before`` is the applied value, ``after`` what the code set)."""


class LedgerRow(BaseModel):
    """One handled command. ``decision`` is ``applied`` only when the whole change took."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    step: int | None = None
    """None for a row written outside a step (a leftover expired when a run starts)."""
    wall_time: float
    decision: Decision
    command_id: str | None = None
    source: str | None = None
    op: str | None = None
    knob: str | None = None
    before: KnobValue | None = None
    after: KnobValue | None = None
    reason: str | None = None
    error: str | None = None
    proposal_id: str | None = None
    decision_id: str | None = None
    proposed_by: str | None = None
    """The command's ``proposed_by``: whose idea a change a person approved was."""
    intent: Intent | None = None
    for_diagnosis: str | None = None
    rolls_back: str | None = None
    snapshot_step: int | None = None
    """For a rewind: the step of the snapshot restored (``step`` is when it was restored)."""
    restored: list[str] | None = None
    """For a rewind: what was restored (``parameters``, ``buffers``, ``optimizer``, ...)."""
    knob_changes: dict[str, tuple[KnobValue, KnobValue]] | None = None
    """For a rewind: each knob it moved, ``(before, after)``."""
    reflex: Trip | None = None
    """For a rewind the kernel made by itself: what tripped the reflex (``kernel.reflexes``)."""
    segment: int | None = None
    """The run segment the row belongs to (0 for the first run in the directory)."""
    offset: int | None = None
    line_crc: int | None = None
    """CRC-32 of the command line answered (``line_crc``): with ``offset``, its identity."""


def line_crc(text: str) -> int:
    """The checksum that, with its byte offset, identifies a line of ``commands.jsonl``."""
    return zlib.crc32(text.encode("utf-8", errors="surrogatepass"))


def command_fields(
    command: Command, offset: int | None, crc: int | None = None
) -> dict[str, object]:
    """What a ledger row repeats of the command it answers: who sent it (and whose idea it
    was), what it touches, and its structured intent (never recovered later from the reason
    text)."""
    return {
        "command_id": command.id,
        "source": command.source,
        "op": command.op,
        "knob": command.knob,
        "proposal_id": command.proposal_id,
        "decision_id": command.decision_id,
        "proposed_by": command.proposed_by,
        "intent": command.intent,
        "for_diagnosis": command.for_diagnosis,
        "rolls_back": command.rolls_back,
        "offset": offset,
        "line_crc": crc,
    }


def read_ledger(run_dir: str | os.PathLike[str]) -> list[LedgerRow]:
    """All valid rows of a run's ledger, oldest first (an empty list when there is none)."""
    return read_models(Path(run_dir) / LEDGER_FILE, LedgerRow)


class Ledger:
    """Appends rows to a run's ledger and remembers what it already answered.

    With ``run_dir=None`` the ledger keeps its memory but writes nothing: the ranks other
    than 0 of a distributed job use it to decide exactly as rank 0 does. Every row is
    stamped with ``segment``, the run segment the kernel is in.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None, segment: int = 0) -> None:
        self.path = None if run_dir is None else Path(run_dir) / LEDGER_FILE
        self.segment = segment
        rows = [] if run_dir is None else read_ledger(run_dir)
        self._seq = max((r.seq for r in rows), default=0)
        self.last_segment = max((r.segment or 0 for r in rows), default=0)
        """The latest segment a row was written in (what is left when kernel.json is lost)."""
        self.handled_offsets: set[int] = set()
        self._crcs: dict[int, set[int | None]] = {}
        """The checksums of the lines answered at each offset (None: a row from before rows
        carried one, which answers any line at its offset)."""
        for r in rows:
            self._remember_line(r.offset, r.line_crc)
        self.handled_ids = {
            r.command_id for r in rows if r.command_id is not None and _blocks_id(r.decision)
        }

    def answered(self, offset: int, crc: int) -> bool:
        """Whether the line ``crc`` at byte ``offset`` of ``commands.jsonl`` has its row."""
        crcs = self._crcs.get(offset)
        return crcs is not None and (crc in crcs or None in crcs)

    def _remember_line(self, offset: int | None, crc: int | None) -> None:
        if offset is not None:
            self.handled_offsets.add(offset)
            self._crcs.setdefault(offset, set()).add(crc)

    def record(self, *, step: int | None, decision: Decision, **fields: object) -> LedgerRow:
        """Append one row and return it.

        Raises:
            OSError: when the row could not be written; nothing is remembered then.
        """
        row = LedgerRow.model_validate(
            {
                "seq": self._seq + 1,
                "step": step,
                "wall_time": time.time(),
                "decision": decision,
                "segment": self.segment,
                **fields,
            }
        )
        if self.path is not None:
            append_line(self.path, row.model_dump_json(exclude_none=True))
        self._seq = row.seq
        self._remember_line(row.offset, row.line_crc)
        if row.command_id is not None and _blocks_id(decision):
            self.handled_ids.add(row.command_id)
        return row

    def memory(self) -> dict[str, object]:
        """What this ledger remembers, as plain data (to hand to another rank)."""
        return {
            "seq": self._seq,
            "segment": self.segment,
            "lines": sorted(
                (o, c) for o, crcs in self._crcs.items() for c in crcs if c is not None
            ),
            "offsets": sorted(o for o, crcs in self._crcs.items() if None in crcs),
            "ids": sorted(self.handled_ids),
        }

    def adopt(self, memory: dict[str, object]) -> None:
        """Remember what another rank's ledger remembers."""
        self._seq = int(memory["seq"])  # type: ignore[call-overload]
        self.segment = int(memory["segment"])  # type: ignore[call-overload]
        self.handled_offsets, self._crcs = set(), {}
        for offset in memory["offsets"]:  # type: ignore[attr-defined]
            self._remember_line(offset, None)
        for offset, crc in memory["lines"]:  # type: ignore[attr-defined]
            self._remember_line(offset, crc)
        self.handled_ids = set(memory["ids"])  # type: ignore[call-overload]


def _blocks_id(decision: Decision) -> bool:
    """Whether a row with ``decision`` makes its command id a duplicate from then on: a
    rejected or expired command may be sent again (fixed, or for the live run)."""
    return decision not in ("rejected", "expired")
