"""LLM spend: estimated before a call, reserved under a lock, charged after; never past a cap.

Two append-only JSON-lines ledgers hold the spend: ``RUN_DIR/autopilot/spend.jsonl`` for the
per-run cap and ``budget.day_ledger`` (shared by every run of the user) for the per-day cap,
whose entries carry the UTC date of their reservation. A call goes:

1. ``estimate``: the worst case, from the prompt's tokens (counted offline, plus overhead and
   a margin for other tokenizers) and every output token the call may produce;
2. ``reserve``: under the locks of both ledgers, refuse if spend plus that worst case would
   pass either cap, else append a ``reserve`` line. Two processes sharing the day ledger
   cannot both pass the check on the same headroom;
3. ``charge``: append the actual cost, which replaces the reservation.

A reservation never charged (a crash mid-call) stays counted at its worst case, so spend
cannot pass a cap however a process dies. Spend is re-read from the files on every check.

Each entry is written to both ledgers, so each cap is checked against the more conservative
of the two: this run's spend is the larger of its own file and its lines in the day ledger
(which lives outside the run directory), and today's spend is the larger of the day ledger
and this run's lines dated today. A ledger that shrank since this ``Budget`` last saw it
(truncated, rotated, deleted) refuses every call until reconciled: restore the file, or
start the watcher again, which counts afresh from both ledgers.

A call's actual cost may exceed its reservation only if the provider reports more tokens
than the request allows (``max_tokens``) or than the tokenizer margin covers; the charge is
then recorded as reported, logged as an error, and no further call is reserved once actual
spend has reached a cap.

Example (writes to a run directory, hence skipped as a doctest):
    >>> budget = Budget(run_dir, settings)  # doctest: +SKIP
    >>> held = budget.reserve(budget.estimate(messages, 600), "analyst")  # doctest: +SKIP
    >>> charged = budget.charge(held, Usage(tokens_in=812, tokens_out=95))  # doctest: +SKIP
    >>> charged.cost_usd  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import Price, Settings
from autopilot.errors import BudgetExceeded
from autopilot.tokens import Usage, count_message_tokens, count_tokens
from kernel.jsonl import append_line, read_models
from kernel.state import AUTOPILOT_DIR

logger = logging.getLogger(__name__)

SPEND_FILE = "spend.jsonl"
MARGIN = 1.2
"""Counting uses cl100k; other tokenizers may need up to this much more."""
RETRY_OVERHEAD = 200
"""Tokens a repair request adds beyond echoing the previous reply (the error, the ask)."""


def cost_usd(price: Price, tokens_in: int, tokens_out: int, cached_in: int = 0) -> float:
    """USD for a call's tokens at ``price`` (per million; cached input at its own rate)."""
    cached = min(max(cached_in, 0), tokens_in)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    total = (tokens_in - cached) * price.input + cached * cached_rate + tokens_out * price.output
    return total / 1_000_000


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """The worst case of one call: every input and output token it may be billed for."""

    model: str
    tokens_in: int
    tokens_out: int
    usd: float

    def __add__(self, other: Estimate) -> Estimate:
        """The worst case of both calls (of one model), held together."""
        return Estimate(
            model=self.model,
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            usd=self.usd + other.usd,
        )


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """Spend held for a call until ``Budget.charge`` replaces it with the actual cost."""

    id: str
    purpose: str
    date: str
    """UTC date the spend counts for, in the per-day ledger."""
    model: str
    usd: float


class SpendEntry(BaseModel):
    """One line of a spend ledger."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    type: Literal["reserve", "charge"]
    id: str
    run: str
    date: str
    usd: float = Field(ge=0)
    purpose: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cached_in: int = 0
    usage_reported: bool = True
    time: float = 0.0


def _utc_today() -> str:
    return datetime.now(UTC).date().isoformat()


class Budget:
    """The per-run and per-day LLM spend of one run directory.

    Args:
        run_dir: the run directory; its spend goes to ``RUN_DIR/autopilot/spend.jsonl``.
        settings: caps (``budget``), the model (``llm.model``) and its price (``prices``).
        today: the UTC date as ``YYYY-MM-DD`` (tests pass a fixed one).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        settings: Settings,
        *,
        today: Callable[[], str] = _utc_today,
    ) -> None:
        self._settings = settings
        self._caps = settings.budget
        self._run_file = Path(run_dir) / AUTOPILOT_DIR / SPEND_FILE
        self._day_file = settings.budget.day_ledger_path()
        self._run_id = str(Path(run_dir).resolve())
        self._today = today
        self._sizes: dict[Path, int] = {}
        """The largest size each ledger was seen at: a smaller one means it shrank."""
        self._shrunk: dict[Path, tuple[int, int]] = {}

    @property
    def model(self) -> str:
        return self._settings.llm.model

    def estimate(
        self,
        messages: Sequence[Mapping[str, object]],
        max_output_tokens: int,
        *,
        attempts: int = 1,
        extra_text: str = "",
    ) -> Estimate:
        """The worst-case tokens and cost of a call that may take ``attempts`` requests.

        A later attempt resends the messages plus the previous reply and a short note
        (a repair request). ``extra_text`` is anything else the request carries, such as
        a response JSON schema.

        Raises:
            BudgetExceeded: when the model has no price (nothing can be checked).
        """
        price = self._price()
        prompt = count_message_tokens(messages, self.model) + count_tokens(extra_text, self.model)
        resent = (attempts - 1) * (max_output_tokens + RETRY_OVERHEAD)
        tokens_in = math.ceil((attempts * prompt + resent) * MARGIN)
        tokens_out = attempts * max_output_tokens
        usd = cost_usd(price, tokens_in, tokens_out)
        return Estimate(model=self.model, tokens_in=tokens_in, tokens_out=tokens_out, usd=usd)

    def reserve(self, estimate: Estimate, purpose: str) -> Reservation:
        """Hold ``estimate.usd`` for a call, or refuse it.

        Raises:
            BudgetExceeded: if spend plus the worst case would pass the per-run or the
                per-day cap; the message names the cap, the spend and the worst case.
        """
        with self._locked():
            date = self._today()
            run, day = self._spent_run(), self._spent_on(date)
            self._check_intact()
            self._check("per-run", self._caps.per_run_usd, run, estimate)
            self._check("per-day", self._caps.per_day_usd, day, estimate)
            held = Reservation(
                id=uuid.uuid4().hex,
                purpose=purpose,
                date=date,
                model=estimate.model,
                usd=estimate.usd,
            )
            self._append(self._entry("reserve", held, usd=held.usd))
        return held

    def charge(self, reservation: Reservation, usage: Usage) -> Usage:
        """Record what the call really cost (this releases the reservation).

        Returns:
            ``usage`` with ``cost_usd`` set to that cost.
        """
        price = self._settings.price(reservation.model) or self._price()
        usd = cost_usd(price, usage.tokens_in, usage.tokens_out, usage.cached_in)
        if usd > reservation.usd:
            logger.error(
                "%s cost $%.6f as the provider reported it (%d tokens in, %d out), more than "
                "its worst-case reservation $%.6f: the provider bills beyond max_tokens or its "
                "tokenizer is much less efficient than cl100k; no call is made once actual "
                "spend reaches a cap",
                reservation.purpose,
                usd,
                usage.tokens_in,
                usage.tokens_out,
                reservation.usd,
            )
        entry = self._entry(
            "charge",
            reservation,
            usd=usd,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cached_in=usage.cached_in,
            usage_reported=usage.reported,
        )
        with self._locked():
            self._append(entry)
        return usage.model_copy(update={"cost_usd": usd})

    def spent_run(self) -> float:
        """USD spent by this run, unsettled reservations included (the larger count of the
        run's ledger and of its lines in the day ledger)."""
        return self._spent_run()

    def spent_day(self) -> float:
        """USD spent today (UTC) by every run sharing the day ledger."""
        return self._spent_on(self._today())

    def remaining(self) -> float:
        """USD that may still be spent before the first cap is reached (none while a
        ledger that shrank is not reconciled)."""
        left = min(
            self._caps.per_run_usd - self.spent_run(), self._caps.per_day_usd - self.spent_day()
        )
        return 0.0 if self._shrunk else max(left, 0.0)

    def _price(self) -> Price:
        price = self._settings.price(self.model)
        if price is None:
            raise BudgetExceeded(
                f"no price known for model {self.model!r}, so its spend cannot be capped; add "
                f'[prices."{self.model}"] with input = ... and output = ... (USD per 1M '
                "tokens) to autopilot.toml (a local provider can set both to 0)"
            )
        return price

    def _check_intact(self) -> None:
        for path, (before, now) in self._shrunk.items():
            raise BudgetExceeded(
                f"spend ledger {path} shrank from {before} to {now} bytes while this run was "
                "watched (truncated, rotated or deleted?), so its spend is unknown and is "
                "treated as exhausted until reconciled: restore the file, or restart the "
                f"watcher, which counts this run's spend afresh from {self._run_file} and "
                f"its lines in {self._day_file}, whichever is more"
            )

    def _check(self, name: str, cap: float, spent: float, estimate: Estimate) -> None:
        if spent + estimate.usd > cap:
            raise BudgetExceeded(
                f"{name} cap ${cap:.6f} would be exceeded: ${spent:.6f} spent so far "
                f"(reservations included), this call could cost up to ${estimate.usd:.6f}; "
                f"raise budget.{name.replace('-', '_')}_usd in autopilot.toml to allow more"
            )

    def _entry(self, kind: Literal["reserve", "charge"], held: Reservation, **kw: object) -> str:
        entry = SpendEntry.model_validate(
            {
                "type": kind,
                "id": held.id,
                "run": self._run_id,
                "date": held.date,
                "purpose": held.purpose,
                "model": held.model,
                "time": time.time(),
                **kw,
            }
        )
        return entry.model_dump_json()

    def _files(self) -> list[Path]:
        # the same path twice would double-count and self-deadlock on its lock
        files = [self._day_file, self._run_file]
        return files[1:] if _same(*files) else files

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold both ledgers' locks (day first, then run: one order, no deadlock)."""
        with contextlib.ExitStack() as stack:
            for path in self._files():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                stack.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
                stack.callback(fcntl.flock, fd, fcntl.LOCK_UN)
            yield

    def _append(self, line: str) -> None:
        for path in self._files():
            append_line(path, line)
            self._seen(path)

    def _spent_run(self) -> float:
        mine = [e for e in self._read(self._day_file) if e.run == self._run_id]
        return max(_total(self._read(self._run_file)), _total(mine))

    def _spent_on(self, date: str) -> float:
        day = [e for e in self._read(self._day_file) if e.date == date]
        mine = [e for e in self._read(self._run_file) if e.date == date]
        return max(_total(day), _total(mine))

    def _read(self, path: Path) -> list[SpendEntry]:
        self._seen(path)
        return read_models(path, SpendEntry)

    def _seen(self, path: Path) -> None:
        """Note the size of ``path``; remember it shrank if it is smaller than ever seen."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        before = self._sizes.get(path, 0)
        if size < before and path not in self._shrunk:
            self._shrunk[path] = (before, size)
            logger.error("spend ledger %s shrank from %d to %d bytes", path, before, size)
        self._sizes[path] = max(before, size)


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _total(entries: list[SpendEntry]) -> float:
    """Charges, plus every reservation that has no charge yet."""
    reserved: dict[str, float] = {}
    charged: dict[str, float] = {}
    for entry in entries:
        (reserved if entry.type == "reserve" else charged)[entry.id] = entry.usd
    pending = sum(usd for rid, usd in reserved.items() if rid not in charged)
    return sum(charged.values()) + pending
