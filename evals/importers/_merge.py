"""Points (step, name, value) from any source folded into kernel metric records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kernel import MetricRecord


@dataclass(frozen=True, kw_only=True)
class Point:
    """One logged value; ``wall_time`` when the source knows it."""

    step: int
    name: str
    value: float
    wall_time: float | None = None


def merge_by_step(points: Iterable[Point]) -> list[MetricRecord]:
    """One record per step, sorted by step; a later value of a name at a step wins.

    A step's wall time is the latest one seen for it (when its last value was logged).
    """
    metrics: dict[int, dict[str, float]] = {}
    times: dict[int, float] = {}
    for point in points:
        metrics.setdefault(point.step, {})[point.name] = point.value
        if point.wall_time is not None:
            times[point.step] = max(point.wall_time, times.get(point.step, point.wall_time))
    return [
        MetricRecord(step=step, wall_time=times.get(step), metrics=metrics[step])
        for step in sorted(metrics)
    ]
