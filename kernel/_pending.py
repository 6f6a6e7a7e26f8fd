"""The commands that wait for their ``apply_at_step``: a heap by step, with an id set.

Accepting one or taking the next due one costs O(log n), whatever the number waiting; the
summary ``kernel.json`` publishes holds the first ``shown`` of them (O(n log shown)).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

from kernel.state import PendingCommand


class PendingQueue:
    """Pending commands ordered by ``apply_at_step``, then by their place in the file."""

    def __init__(self, items: Iterable[PendingCommand] = ()) -> None:
        self._heap: list[tuple[int, int, int, PendingCommand]] = []
        self._ids: set[str] = set()
        self._order = itertools.count()
        for item in items:
            self.push(item)

    def push(self, item: PendingCommand) -> None:
        due = item.command.apply_at_step or 0
        heapq.heappush(self._heap, (due, item.offset, next(self._order), item))
        self._ids.add(item.command.id)

    def pop(self) -> PendingCommand:
        item = heapq.heappop(self._heap)[3]
        self._ids.discard(item.command.id)
        return item

    def next_due_step(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def has_id(self, command_id: str) -> bool:
        return command_id in self._ids

    def first(self, n: int) -> list[PendingCommand]:
        return [entry[3] for entry in heapq.nsmallest(n, self._heap)]

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[PendingCommand]:
        """Every pending command, soonest first."""
        return iter(self.first(len(self._heap)))
