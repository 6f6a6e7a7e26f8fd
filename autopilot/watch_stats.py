"""What an autopilot's loop has done so far: its ticks and their CPU time.

Example:
    >>> TickStats().ticks
    0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class TickStats:
    """What an ``Autopilot``'s loop has done so far (``serve`` reports it per run).

    ``cpu_s`` is the CPU time of its ticks (the thread's, so it is this run's alone when
    many runs tick in one process); ``seen_bytes`` the metrics file's size the last tick
    started from, and ``last_tick_at`` when that tick ended (``time.time()``)."""

    ticks: int = 0
    cpu_s: float = 0.0
    seen_bytes: int = 0
    last_tick_at: float | None = None
