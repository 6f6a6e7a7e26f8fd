"""Each run's parsed metric columns, kept per process, so that opening a run again reads
only the lines appended since (the metrics API's ``offset=0`` page).

A run's entry holds, for its current run segment read from ``kernel.json``'s
``metrics_start``, one column per metric (int64 steps and float64 values: 16 bytes a
point, 32 MB for 100k steps of 20 metrics), the rewind markers, and the ``JsonlTail`` that
read them, which knows the byte offset and the inode. A request
extends the columns with what was appended; the entry is built again from the segment's
start when the metrics file is another one (a new inode: replaced, or rotated), or its
reader had to start over (the file shrank or was written again), or the run moved to a new
segment. The entries are bounded by their size (``max_bytes``), least recently used first
out; each has its own lock, as uvicorn serves sync routes from a thread pool.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp())
    >>> line = {"step": 1, "metrics": {"loss": 2.0}}
    >>> _ = (run / "metrics.jsonl").write_text(json.dumps(line) + "\\n")
    >>> cache = ColumnCache(max_bytes=2**20)
    >>> page = cache.page(run, start=0, segment=None, names=None, max_points=100)
    >>> page.series["loss"].values, page.next_offset
    ([2.0], 38)
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from autopilot.service.lttb import lttb
from autopilot.service.metric_lines import Batch, parse
from autopilot.service.models import MetricsPage, Series
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 2**20
"""About eight runs of 100k steps of 20 metrics."""


class Column:
    """One metric's points, in the order read, as chunks joined when read."""

    def __init__(self) -> None:
        self._steps: list[npt.NDArray[Any]] = []
        self._values: list[npt.NDArray[np.float64]] = []

    def extend(self, steps: npt.NDArray[Any], values: npt.NDArray[np.float64]) -> None:
        self._steps.append(steps)
        self._values.append(values)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes + v.nbytes for s, v in zip(self._steps, self._values, strict=True))

    def arrays(self) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
        """Steps (int64, or Python ints past 64 bits) and values."""
        if len(self._steps) != 1:
            self._steps = [np.concatenate(self._steps)] if self._steps else [_NO_STEPS]
            self._values = [np.concatenate(self._values)] if self._values else [_NO_VALUES]
        return self._steps[0], self._values[0]

    def series(self, max_points: int) -> Series:
        """Downsampled over the finite points; every non-finite point is kept (``None``)."""
        steps, y = self.arrays()
        finite = np.isfinite(y)
        keep = np.flatnonzero(finite)
        if len(keep) > max_points:
            keep = keep[lttb(steps[keep].astype(float), y[keep], max_points)]
        kept = np.union1d(keep, np.flatnonzero(~finite))
        values = y[kept].tolist()
        for i in np.flatnonzero(~finite[kept]).tolist():
            values[i] = None
        return Series(steps=steps[kept].tolist(), values=values, points=len(y))


_NO_STEPS = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros(0, dtype=np.float64)


@dataclass
class Columns:
    """A page's worth of records as columns: ``add`` parsed batches, read back the
    downsampled ``series``."""

    columns: dict[str, Column] = field(default_factory=dict)
    rewinds: list[tuple[int, int]] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        """Append the batch's records, in order."""
        parts: dict[str, list[tuple[npt.NDArray[np.intp], npt.NDArray[Any], npt.NDArray[Any]]]]
        parts = {}
        for names, group in batch.groups.items():
            rows = np.array(group.rows, dtype=np.intp)
            steps = _steps(group.steps)
            values = np.array(group.values, dtype=float).reshape(len(rows), len(names))
            for j, name in enumerate(names):
                parts.setdefault(name, []).append((rows, steps, values[:, j]))
        for name, found in parts.items():
            if name not in self.columns:
                self.columns[name] = Column()
            self.columns[name].extend(*_in_order(found))
        self.rewinds += batch.rewinds

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())

    def series(self, names: list[str] | None, max_points: int) -> dict[str, Series]:
        """The series of ``names`` (None: all), in the order first seen."""
        wanted = None if names is None else set(names)
        return {
            name: column.series(max_points)
            for name, column in self.columns.items()
            if wanted is None or name in wanted
        }


def _steps(steps: list[int]) -> npt.NDArray[Any]:
    try:
        return np.array(steps, dtype=np.int64)
    except OverflowError:  # a step past 64 bits: the model accepts any integer
        return np.array(steps, dtype=object)


def _in_order(
    parts: list[tuple[npt.NDArray[np.intp], npt.NDArray[Any], npt.NDArray[Any]]],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """One metric's points from the groups that hold it, in the order of their records."""
    if len(parts) == 1:
        _, steps, values = parts[0]
        return steps, values.copy()  # a column of the group's block: keep only its own
    order = np.argsort(np.concatenate([rows for rows, _, _ in parts]), kind="stable")
    steps = np.concatenate([s for _, s, _ in parts])[order]
    return steps, np.concatenate([v for _, _, v in parts])[order]


def page_of(
    columns: Columns,
    offset: int,
    next_offset: int,
    segment: int | None,
    names: list[str] | None,
    max_points: int,
) -> MetricsPage:
    """``columns`` as the metrics API's page of the bytes from ``offset`` to ``next_offset``."""
    series = columns.series(names, max_points)
    return MetricsPage(
        offset=offset,
        next_offset=next_offset,
        segment=segment,
        downsampled=any(len(s.steps) < s.points for s in series.values()),
        series=series,
        rewinds=list(columns.rewinds),
    )


@dataclass
class _Entry:
    """One run's columns from ``start`` of the metrics file with inode ``inode``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    key: tuple[int, int | None, int] | None = None
    """``(inode, segment, start)`` the columns were read for."""
    tail: JsonlTail | None = None
    columns: Columns = field(default_factory=Columns)
    last: tuple[tuple[object, ...], MetricsPage] | None = None
    """The last page served, with what it was asked for and read up to."""
    nbytes: int = 0


class ColumnCache:
    """Per run directory, its metric columns since the segment's start (LRU by size)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.rebuilds = 0
        """How many times an entry was read again from its start (for tests and logs)."""
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def page(
        self,
        run_dir: Path,
        *,
        start: int,
        segment: int | None,
        names: list[str] | None,
        max_points: int,
    ) -> MetricsPage:
        """The segment's metrics from byte ``start`` to the end, as ``views.metrics_page``
        pages them: what is new since the last call is read and added first."""
        path = os.fspath(run_dir / METRICS_FILE)
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return page_of(Columns(), start, start, segment, names, max_points)
        entry = self._entry(path)
        with entry.lock:
            tail = self._refresh(entry, path, (inode, segment, start))
            asked = (None if names is None else tuple(names), max_points, tail.offset)
            if entry.last is None or entry.last[0] != asked:
                page = page_of(entry.columns, start, tail.offset, segment, names, max_points)
                entry.last = asked, page
            page = entry.last[1]
            entry.nbytes = entry.columns.nbytes
        self._evict()
        return page

    def _entry(self, path: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry()
            self._entries.move_to_end(path)
            return entry

    def _refresh(self, entry: _Entry, path: str, key: tuple[int, int | None, int]) -> JsonlTail:
        tail = entry.tail
        if tail is not None and entry.key == key:
            resets, rotations = tail.resets, tail.rotations
            batch = parse(tail.read_new(), key[1])
            if (tail.resets, tail.rotations) == (resets, rotations):
                entry.columns.add(batch)
                return tail
            why = "started over" if tail.resets > resets else "followed a rotation"
            logger.info("%s: its reader %s; reading the segment again", path, why)
        if tail is not None:
            self.rebuilds += 1
        entry.key, entry.last, entry.columns = key, None, Columns()
        # no inode: a fresh reader reads as an uncached page would, from ``start``
        tail = JsonlTail(path, offset=key[2])
        entry.columns.add(parse(tail.read_new(), key[1]))
        # a reader that started over read from byte 0, not ``start``: the next call must too
        entry.tail = tail if tail.resets == 0 else None
        return tail

    @property
    def nbytes(self) -> int:
        """The size of the cached columns (as counted when they were last read)."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def _evict(self) -> None:
        with self._lock:
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, entry = self._entries.popitem(last=False)
                total -= entry.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


COLUMNS = ColumnCache()
"""The service process's cache (``views.metrics_page``)."""
