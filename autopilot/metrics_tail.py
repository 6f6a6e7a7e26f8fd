"""Reading ``metrics.jsonl`` from outside the training process (the CLI and the service):
its recent tail, or new records as they arrive."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from kernel import MetricRecord
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_paths


def _parse(lines: list[str]) -> list[MetricRecord]:
    records = []
    for line in lines:
        try:
            records.append(MetricRecord.model_validate_json(line))
        except ValidationError:
            continue  # a line cut by the tail window, or written by something else
    return records


def recent_metrics(run_dir: Path, max_bytes: int = 65536) -> list[MetricRecord]:
    """The records in the last ``max_bytes`` of the run's metrics, oldest first; a
    ``metrics.jsonl`` rotated lately is completed from the newest rotated file."""
    path = run_dir / METRICS_FILE
    chunk, cut = _tail(path, max_bytes)
    if not cut and len(chunk) < max_bytes and (rotated := rotated_paths(path)):
        earlier, cut = _tail(rotated[-1], max_bytes - len(chunk))
        chunk = earlier + chunk
    lines = chunk.decode("utf-8", errors="replace").split("\n")  # not splitlines: U+2028
    if cut:
        lines = lines[1:]  # the first line is probably cut
    return _parse(lines)


def _tail(path: Path, max_bytes: int) -> tuple[bytes, bool]:
    """The last ``max_bytes`` of ``path`` (empty when missing), and whether it was cut."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            return f.read(), size > max_bytes
    except FileNotFoundError:
        return b"", False


def latest_values(records: list[MetricRecord]) -> dict[str, tuple[int, float]]:
    """The newest ``(step, value)`` of each metric name in ``records``."""
    latest: dict[str, tuple[int, float]] = {}
    for record in records:
        for name, value in record.metrics.items():
            latest[name] = (record.step, value)
    return latest


class MetricsFollower:
    """Yields the records appended to a run's metrics since the last call."""

    def __init__(self, run_dir: Path) -> None:
        self._tail = JsonlTail(run_dir / METRICS_FILE)

    def new_records(self) -> list[MetricRecord]:
        """Complete records appended since the previous call (none if nothing changed)."""
        if not self._tail.changed():
            return []
        return _parse([text for _, text in self._tail.read_new()])
