"""Metric records (``metrics.jsonl``): the kernel writes them, everything else reads them.

A line is ``{"step": int, "wall_time": float, "metrics": {name: float}}``. NaN and infinities
are kept, because they are the strongest sign of divergence: JSON has no literal for them, so
they are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and their names
are listed under ``"nonfinite"``. ``MetricRecord`` reads them back as floats.

Writing is off the hot path: ``log`` only buffers; ``flush`` converts values (tensors are
read here, so a GPU is synchronised once per flush, not once per step), serialises and
appends the whole batch with one ``write``.
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

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_NONFINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


class MetricRecord(BaseModel):
    """One line of ``metrics.jsonl`` as read back (non-finite strings become floats)."""

    model_config = ConfigDict(extra="ignore")

    step: int
    wall_time: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    nonfinite: list[str] = Field(default_factory=list)
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
        if self.segment:
            line["segment"] = self.segment
        return json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n"


def _to_float(value: Any) -> float:
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


class MetricsWriter:
    """Buffers metric records and appends them to ``metrics.jsonl`` in batches."""

    def __init__(self, run_dir: str | os.PathLike[str], segment: int = 0) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._pending: list[tuple[int, float, dict[str, Any]]] = []
        self._keys: dict[str, str] = {}
        self._tail = f',"segment":{int(segment)}' if segment else ""

    def start_segment(self) -> int:
        """Close a line torn by a process that died mid-write; return the offset at which
        this writer's records will begin."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        with open(self.path, "rb+") as f:
            f.seek(max(size - 1, 0))
            if size and f.read(1) != b"\n":
                f.write(b"\n")
                size += 1
        return size

    def add(self, step: int, wall_time: float, metrics: Mapping[str, Any]) -> None:
        self._pending.append((step, wall_time, dict(metrics)))

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        text = "".join(self._line(*record) for record in batch)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)

    def _line(self, step: int, wall_time: float, metrics: dict[str, Any]) -> str:
        keys = self._keys
        fields, nonfinite = [], []
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
            if math.isfinite(value):
                fields.append(f"{key}:{value!r}")
            else:
                fields.append(f"{key}:{_NONFINITE[repr(value)]}")
                nonfinite.append(name)
        extra = f',"nonfinite":{json.dumps(nonfinite)}' if nonfinite else ""
        extra += self._tail
        return (
            f'{{"step":{int(step)},"wall_time":{wall_time:.6f},'
            f'"metrics":{{{",".join(fields)}}}{extra}}}\n'
        )

    def _key(self, name: str) -> str:
        key = self._keys[name] = json.dumps(str(name))
        return key
