"""Metric records (``metrics.jsonl``): the kernel writes them, everything else reads them.

A line is ``{"step": int, "wall_time": float, "metrics": {name: float}}``. NaN and infinities
are kept, because they are the strongest sign of divergence: JSON has no literal for them, so
they are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and their names
are listed under ``"nonfinite"``. ``MetricRecord`` reads them back as floats.

Writing is off the hot path: ``log`` only buffers; ``flush`` converts values (tensors are
read here, so a GPU is synchronised once per flush, not once per step), serialises and
appends the whole batch with one ``write``.

With ``rotate_bytes`` the file is rotated by size (``kernel.rotation``): a batch that would
take ``metrics.jsonl`` past that many bytes is split at a line, the file is renamed to
``metrics.1.jsonl`` and the rest goes to a new ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kernel.metric_names import split_role
from kernel.rotation import rotate

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024
"""Metrics kept in memory while ``metrics.jsonl`` cannot be written (about 60,000 lines)."""
REWOUND_TO = "\x00rewound_to"
"""Where ``add`` carries the rewind marker to ``_line`` (no metric can be named so)."""
_NONFINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


class MetricRecord(BaseModel):
    """One line of ``metrics.jsonl`` as read back (non-finite strings become floats)."""

    model_config = ConfigDict(extra="ignore")

    step: int
    wall_time: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    nonfinite: list[str] = Field(default_factory=list)
    rewound_to: int | None = None
    """Set on the first record after a rewind: the step of the snapshot restored. The
    records before it, back to that step, belong to an abandoned trajectory."""
    segment: int = 0
    """The run segment (``kernel.json``'s ``segment``) the record belongs to. Steps start
    again in a new segment: readers must not splice one segment's curve onto another's.
    Written only from segment 1 on, so a directory used once reads as before."""

    def to_line(self) -> str:
        """This record as a ``metrics.jsonl`` line (with its newline), spelt as the kernel
        writes it; ``wall_time`` is left out when unknown. For tools that write runs; the
        kernel's own writer builds its lines faster by hand."""
        fields: dict[str, float | str] = {}
        nonfinite = []
        for name, value in self.metrics.items():
            if math.isfinite(value):
                fields[name] = value
            else:
                fields[name] = _NONFINITE[repr(value)].strip('"')  # "NaN", "Infinity"...
                nonfinite.append(name)
        line: dict[str, Any] = {"step": self.step}
        if self.wall_time is not None:
            line["wall_time"] = self.wall_time
        line["metrics"] = fields
        if nonfinite:
            line["nonfinite"] = nonfinite
        if self.rewound_to is not None:
            line["rewound_to"] = self.rewound_to
        if self.segment:
            line["segment"] = self.segment
        return json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n"


def _to_float(value: Any) -> float:
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


class MetricsWriter:
    """Buffers metric records and appends them to ``metrics.jsonl`` in batches.

    Every write is checked. When the file cannot take a batch (a full disk, a read-only or
    removed directory), the lines are kept, at most ``max_buffer_bytes`` of them (the
    oldest are dropped beyond that), one warning says so, and each later ``flush`` tries
    again. A short write never leaves a torn fragment: the file is cut back to its last
    whole line, or, if even that fails, the next write starts on a new line.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        segment: int = 0,
        *,
        max_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        every: int = 1,
        max_per_s: float = 0.0,
        rotate_bytes: int = 0,
        keep: int = 5,
    ) -> None:
        if rotate_bytes < 0:
            raise ValueError(
                f"rotate_bytes must be >= 0 bytes (0: no rotation), got {rotate_bytes}"
            )
        if keep < 1:
            raise ValueError(f"keep must be >= 1 rotated file, got {keep}")
        if max_buffer_bytes < 0:
            raise ValueError(f"max_buffer_bytes must be >= 0, got {max_buffer_bytes}")
        if every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every}")
        if not max_per_s >= 0:
            raise ValueError(
                f"max_per_s must be >= 0 records a second (0: no cap), got {max_per_s}"
            )
        self.every = every
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.rotations = 0
        self.segment_start = 0
        """Where this writer's run segment begins in the current file (0 once rotated)."""
        self.max_per_s = max_per_s
        self._next_kept_at = -math.inf
        self._always: dict[str, bool] = {}
        """Per metric name: whether it is an evaluation metric (its records are always kept)."""
        self.path = Path(run_dir) / METRICS_FILE
        self.max_buffer_bytes = max_buffer_bytes
        self._pending: list[tuple[int, float, dict[str, Any]]] = []
        self._keys: dict[str, str] = {}
        self._tail = f',"segment":{int(segment)}' if segment else ""
        self._unwritten = b""
        """Whole lines a failed write left to write; at most ``max_buffer_bytes``."""
        self._failing = False
        self._dropped = 0
        self._check_tail = False
        """A torn fragment could not be cut off: the next write starts on a new line."""
        self._rewound_to: int | None = None

    def start_segment(self) -> int:
        """Close a line torn by a process that died mid-write; return the offset at which
        this writer's records will begin."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.segment_start = 0
            return 0
        with open(self.path, "rb+") as f:
            f.seek(max(size - 1, 0))
            if size and f.read(1) != b"\n":
                f.write(b"\n")
                size += 1
        self.segment_start = size
        return size

    def add(self, step: int, wall_time: float, metrics: Mapping[str, Any]) -> None:
        if self._rewound_to is not None:
            metrics = {**metrics, REWOUND_TO: self._rewound_to}
            self._rewound_to = None
        self._pending.append((step, wall_time, dict(metrics)))

    def mark_rewind(self, snapshot_step: int) -> None:
        """Mark the next record: the state was rewound to the snapshot of ``snapshot_step``
        before it (``MetricRecord.rewound_to``), so readers restart their windows there."""
        self._rewound_to = snapshot_step

    def set_segment(self, segment: int) -> None:
        """Tag this writer's records, those held already included, with run ``segment``."""
        tail = f',"segment":{int(segment)}' if segment else ""
        if tail and not self._tail:  # a raw newline ends a line, and only there
            self._unwritten = self._unwritten.replace(b"}\n", tail.encode() + b"}\n")
        self._tail = tail

    def hold(self) -> None:
        """Keep what is buffered, within ``max_buffer_bytes``, without writing it: the run
        directory is known to be unwritable (whoever knows has said so)."""
        self._encode_pending()
        self._failing = True
        self._bound()

    def flush(self) -> None:
        """Append what is buffered; on failure keep it (bounded) for the next flush."""
        self._encode_pending()
        if not self._unwritten:
            return
        append = self._append_rotating if self.rotate_bytes else self._append
        written, error = append(self._unwritten)
        self._unwritten = self._unwritten[written:]
        if error is not None:
            self._fail(error)
        elif self._failing:
            self._failing = False
            logger.warning(
                "%s is writable again; %d records dropped while it was not",
                self.path,
                self._dropped,
            )
            self._dropped = 0

    def _append_rotating(self, data: bytes) -> tuple[int, OSError | None]:
        """``_append``, rotating the file before it would pass ``rotate_bytes``; a line
        longer than that goes alone into a new file."""
        done = 0
        while done < len(data):
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
            cut = data.rfind(b"\n", done, done + self.rotate_bytes - size) + 1
            if cut <= done:  # not one more line fits
                if size:
                    try:
                        self._rotate()
                    except OSError as exc:
                        return done, exc
                    continue
                cut = data.find(b"\n", done) + 1 or len(data)
            written, error = self._append(data[done:cut])
            done += written
            if error is not None:
                return done, error
        return done, None

    def _rotate(self) -> None:
        rotate(self.path, self.keep)
        self.rotations += 1
        self.segment_start = 0
        self._check_tail = False

    def _append(self, data: bytes) -> tuple[int, OSError | None]:
        """Append ``data`` (whole lines); return how many bytes of whole lines are in the
        file, and the error that stopped the rest."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            return 0, exc
        end = done = 0
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if self._check_tail and end and os.pread(fd, 1, end - 1) != b"\n":
                os.write(fd, b"\n")
                end += 1
            self._check_tail = False
            view = memoryview(data)
            while done < len(data):
                done += os.write(fd, view[done:])
            return done, None
        except OSError as exc:
            return self._cut_back(fd, end, data, done), exc
        finally:
            os.close(fd)

    def _cut_back(self, fd: int, end: int, data: bytes, done: int) -> int:
        """A write came back short: cut the file back to the last whole line written."""
        whole = data.rfind(b"\n", 0, done) + 1
        if whole < done:
            try:
                os.ftruncate(fd, end + whole)
            except OSError:
                self._check_tail = True
        return whole

    def _fail(self, error: OSError) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "could not append to %s (%s); keeping up to %d bytes of metrics in memory "
                "and trying again at every flush",
                self.path,
                error.strerror or error,
                self.max_buffer_bytes,
            )
        self._bound()

    def _encode_pending(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            lines = []
            for step, wall_time, metrics in batch:
                line, always = self._line(step, wall_time, metrics)
                if always or self._due(step, wall_time):
                    lines.append(line)
            self._unwritten += "".join(lines).encode()

    def _due(self, step: int, wall_time: float) -> bool:
        """The logging cadence: every ``every``-th step, at most ``max_per_s`` a second."""
        if step % self.every:
            return False
        if self.max_per_s:
            if wall_time < self._next_kept_at:
                return False
            self._next_kept_at = wall_time + 1.0 / self.max_per_s
        return True

    def _bound(self) -> None:
        over = len(self._unwritten) - self.max_buffer_bytes
        if over > 0:
            cut = self._unwritten.find(b"\n", over - 1) + 1 or len(self._unwritten)
            self._dropped += self._unwritten.count(b"\n", 0, cut)
            self._unwritten = self._unwritten[cut:]

    def _line(self, step: int, wall_time: float, metrics: dict[str, Any]) -> tuple[str, bool]:
        """The record as a line, and whether the cadence must keep it (a non-finite value
        or an evaluation metric: rare, and what the autopilot judges a run by)."""
        keys, always = self._keys, False
        fields, nonfinite = [], []
        marker = metrics.pop(REWOUND_TO, None)
        for name, value in metrics.items():
            if type(value) is not float:  # the common case needs no conversion
                try:
                    value = _to_float(value)
                except Exception:  # anything float() refuses, e.g. a huge int overflowing
                    logger.warning(
                        "metric %r at step %d is not a number (%r); not recorded", name, step, value
                    )
                    continue
            key = keys.get(name) or self._key(name)
            always = always or self._always[name]
            if math.isfinite(value):
                fields.append(f"{key}:{value!r}")
            else:
                fields.append(f"{key}:{_NONFINITE[repr(value)]}")
                nonfinite.append(name)
        extra = f',"nonfinite":{json.dumps(nonfinite)}' if nonfinite else ""
        extra += self._tail
        if marker is not None:
            extra += f',"rewound_to":{int(marker)}'
            always = True
        line = (
            f'{{"step":{int(step)},"wall_time":{wall_time:.6f},'
            f'"metrics":{{{",".join(fields)}}}{extra}}}\n'
        )
        return line, always or bool(nonfinite)

    def _key(self, name: str) -> str:
        self._always[name] = split_role(str(name))[0] == "val"
        key = self._keys[name] = json.dumps(str(name))
        return key
