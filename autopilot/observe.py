"""Observe: read what the run appended since the last tick, and fold it into the windows.

The autopilot never re-reads history. It keeps byte offsets into ``metrics.jsonl`` (with
the file's inode, to follow a size-based rotation) and ``applied.jsonl`` in its graph
state, reads only the bytes appended since, and keeps the last ``window`` points of each
metric (columnar: ``[steps, values]``) plus each metric's best value over the run. An
autopilot that starts late on a long run begins from the last ``START_TAIL_BYTES`` of the
metrics.

A run directory reused for a later run holds several run *segments* (``kernel.json``'s
``segment``; each metric record names its own). Steps start again in each, so the observer
reads only the current segment: it starts where the kernel says the segment begins, drops
the records of earlier segments from a read, and ``fold_segment`` starts new windows when a
later segment begins under a running watcher.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from autopilot.summary import EARLY_POINTS, Best, Early, Peak, Windows
from kernel import LedgerRow, MetricRecord, read_kernel_state
from kernel.errors import KernelError
from kernel.jsonl import JsonlTail
from kernel.ledger import LEDGER_FILE
from kernel.metric_names import metric_mode
from kernel.metrics import METRICS_FILE

logger = logging.getLogger(__name__)

START_TAIL_BYTES = 4 << 20
"""How much of an existing metrics file a freshly started autopilot reads."""


def start_offset(run_dir: Path, tail_bytes: int = START_TAIL_BYTES) -> int:
    """Where a new autopilot starts reading ``metrics.jsonl``: at most ``tail_bytes`` back,
    at the start of a line, and never before the current run segment's first record."""
    path = run_dir / METRICS_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    segment_start = _segment_start(run_dir)
    if size - segment_start <= tail_bytes:
        return min(segment_start, size)
    with open(path, "rb") as f:
        f.seek(size - tail_bytes)
        skipped = f.readline()  # probably a partial line
    return size - tail_bytes + len(skipped)


def _segment_start(run_dir: Path) -> int:
    try:
        state = read_kernel_state(run_dir)
    except KernelError:  # a half-written kernel.json from another tool: read from the tail
        return 0
    return 0 if state is None else state.metrics_start


def read_metrics(
    run_dir: Path, offset: int, inode: int | None = None
) -> tuple[list[MetricRecord], int, int | None]:
    """The complete metric records appended after ``offset``, the new offset and the inode
    of the file it is in. When they span run segments, only the latest segment's records
    are returned.

    Pass back the ``inode`` of the previous read: when ``metrics.jsonl`` was rotated since
    (``KernelSettings.metrics_rotate_bytes``), the rest of the rotated file is read first,
    then every file rotated after it, then the new file, so no record is lost or read twice.
    """
    tail = JsonlTail(run_dir / METRICS_FILE, offset, inode=inode)
    records = []
    for _, text in tail.read_new():
        try:
            records.append(MetricRecord.model_validate_json(text))
        except ValidationError:
            continue  # not a metric record (written by something else); never fatal
    if records and records[0].segment != records[-1].segment:
        latest = max(r.segment for r in records)
        records = [r for r in records if r.segment == latest]
    return records, tail.offset, tail.inode


def fold_segment(
    segment: int | None,
    windows: Windows,
    best: Best,
    records: Sequence[MetricRecord],
    window: int,
) -> tuple[int | None, Windows, Best]:
    """``fold_records`` for a watcher that keeps the segment its windows belong to: records
    of a later segment start new windows and bests instead of extending the old curve.

    Example:
        >>> from kernel import MetricRecord
        >>> old = [MetricRecord(step=5630, metrics={"loss": 0.1})]
        >>> new = [MetricRecord(step=0, metrics={"loss": 2.0}, segment=1)]
        >>> segment, windows, best = fold_segment(None, {}, {}, old, window=10)
        >>> fold_segment(segment, windows, best, new, window=10)
        (1, {'loss': [[0], [2.0]]}, {'loss': [2.0, 0]})
    """
    if not records:
        return segment, windows, best
    latest = records[-1].segment
    if segment is not None and latest > segment:
        windows, best = {}, {}
    return latest, *fold_records(windows, best, records, window)


Span = tuple[int, int]
"""``(snapshot_step, rewind_step)``: the steps a rewind abandoned, ``lo < step <= hi``."""


def rewound_span(rows: Iterable[LedgerRow], records: Iterable[MetricRecord]) -> Span | None:
    """The latest rewind this read shows: an applied ``rewind`` row of the ledger (written
    at the step of the rewind, before its metrics are flushed) or a metric record's
    ``rewound_to`` marker (the first record after it). None: no rewind.

    Example:
        >>> from kernel import MetricRecord
        >>> rewound_span([], [MetricRecord(step=402, rewound_to=300)])
        (300, 401)
    """
    span = None
    for row in rows:
        if row.decision == "applied" and row.op == "rewind" and row.snapshot_step is not None:
            span = (row.snapshot_step, row.step if row.step is not None else row.snapshot_step)
    for record in records:
        if record.rewound_to is not None:
            marked = (record.rewound_to, record.step - 1)
            span = marked if span is None or marked[1] > span[1] else span
    return span


def drop_rewound(
    windows: Windows, best: Best, records: list[MetricRecord], span: Span | None
) -> tuple[Windows, Best, list[MetricRecord]]:
    """Windows, bests and new records without the points of the trajectory a rewind
    abandoned: after it, the run goes on from the snapshot's state, so the curve does too
    (a loss of 1077 at the step that tripped the reflex is not this run's any more).

    Example:
        >>> from kernel import MetricRecord
        >>> windows = {"loss": [[300, 350, 401], [0.1, 0.08, 1077.0]]}
        >>> best = {"loss": [0.08, 350]}
        >>> later = [MetricRecord(step=401, metrics={"loss": 1077.0}),
        ...          MetricRecord(step=402, metrics={"loss": 0.1}, rewound_to=300)]
        >>> w, b, kept = drop_rewound(windows, best, later, (300, 401))
        >>> w, b, [r.step for r in kept]
        ({'loss': [[300], [0.1]]}, {}, [402])
    """
    if span is None:
        return windows, best, records
    lo, hi = span
    kept = [r for r in records if not lo < r.step <= hi]
    pruned: Windows = {}
    for name, (steps, values) in windows.items():
        keep = [i for i, step in enumerate(steps) if not lo < step <= hi]
        pruned[name] = [[steps[i] for i in keep], [values[i] for i in keep]]
    return pruned, {n: b for n, b in best.items() if not lo < b[1] <= hi}, kept


def read_changes(run_dir: Path, offset: int) -> tuple[list[LedgerRow], int]:
    """Ledger rows appended after ``offset`` (every decision), and the new offset."""
    tail = JsonlTail(run_dir / LEDGER_FILE, offset)
    rows = []
    for _, text in tail.read_new():
        try:
            rows.append(LedgerRow.model_validate_json(text))
        except ValidationError:
            continue
    return rows, tail.offset


def _columns(records: Iterable[MetricRecord]) -> dict[str, tuple[list[int], list[float]]]:
    """Each metric's steps and values in ``records``, in order (one pass over them)."""
    columns: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        step = record.step
        for name, value in record.metrics.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = ([], [])
            column[0].append(step)
            column[1].append(float(value))
    return columns


def fold_records(
    windows: Windows, best: Best, records: Iterable[MetricRecord], window: int
) -> tuple[Windows, Best]:
    """New windows and bests with ``records`` folded in (the inputs are not changed).

    Example:
        >>> from kernel import MetricRecord
        >>> records = [MetricRecord(step=s, metrics={"loss": 1 / s}) for s in (1, 2, 4)]
        >>> fold_records({}, {}, records, window=2)
        ({'loss': [[2, 4], [0.5, 0.25]]}, {'loss': [0.25, 4]})
    """
    windows = {name: _copy(name, w) for name, w in windows.items()}
    best = dict(best)
    for name, (steps, values) in _columns(records).items():
        columns = windows.get(name)
        if columns is None:
            columns = windows[name] = [[], []]
        columns[0].extend(steps)
        columns[1].extend(values)
        finite = list(filter(math.isfinite, values))
        if finite:
            top = min(finite) if metric_mode(name) == "min" else max(finite)
            if _better(name, top, best.get(name)):
                best[name] = [top, steps[values.index(top)]]
    for kept in windows.values():
        if (extra := len(kept[0]) - window) > 0:
            del kept[0][:extra], kept[1][:extra]
    return windows, best


def fold_run_stats(early: Early, peak: Peak, records: Iterable[MetricRecord]) -> tuple[Early, Peak]:
    """New run-long statistics with ``records`` folded in: each metric's first
    ``EARLY_POINTS`` finite values, and its largest value with its step, its latest finite
    value and its largest fall between two points as a fraction of the largest value then
    (``Peak``; the inputs are not changed).

    Example:
        >>> from kernel import MetricRecord
        >>> lrs = ((1, 1.0), (2, 3.0), (3, 0.3))
        >>> records = [MetricRecord(step=s, metrics={"lr": v}) for s, v in lrs]
        >>> fold_run_stats({}, {}, records)
        ({'lr': [1.0, 3.0, 0.3]}, {'lr': [3.0, 2, 0.3, 0.9]})
    """
    early = {name: list(values) for name, values in early.items()}
    peak = dict(peak)
    for name, (steps, values) in _columns(records).items():
        points = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        if not points:
            continue
        first = early.setdefault(name, [])
        if len(first) < EARLY_POINTS:
            first.extend(v for _, v in points[: EARLY_POINTS - len(first)])
        top = peak.get(name)
        if top is None:
            top = [points[0][1], points[0][0], points[0][1], 0.0]
            points = points[1:]
        if len(top) < 4:  # older: [value, step]
            top = [top[0], top[1], points[0][1], 0.0]
        largest, at, last, drop = top
        for step, value in points:
            if largest > 0:
                fall = (last - value) / largest
                if fall > drop:
                    drop = fall
            if value > largest:
                largest, at = value, step
            last = value
        peak[name] = [largest, at, last, drop]
    return early, peak


def _copy(name: str, window: list[list[float]]) -> list[list[float]]:
    """A copy of ``window``, or an empty window when it is not ``[steps, values]`` (a state
    checkpointed by an older version, which kept a ``[step, value]`` pair per point)."""
    if len(window) == 2 and len(window[0]) == len(window[1]):
        return [list(window[0]), list(window[1])]
    logger.warning("the window of %s is not [steps, values]; starting it again", name)
    return [[], []]


def _better(name: str, value: float, current: list[float] | None) -> bool:
    if current is None:
        return True
    return value < current[0] if metric_mode(name) == "min" else value > current[0]


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
