"""The nouns of the task suite: a setup (data, model, length), a task (a setup started from
one configuration of its knobs) and the outcome of training one.

Knob names are the kernel's: ``lr`` and ``weight_decay`` of the optimizer, ``loss.<name>``
for an entry of the loss-weight dict. A setup's ``space`` bounds every knob it has, for the
tuner and the autopilot alike; a task starts from a value of each.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

Dataset = Literal["digits", "breast_cancer", "diabetes", "sklearn_descr"]


@dataclass(frozen=True, kw_only=True)
class Setup:
    """Data, model and run length; tasks sharing a setup share the oracle's grid sweep.

    Raises:
        ValueError: when the space, grid or model fields do not fit together.
    """

    name: str
    dataset: Dataset
    steps: int
    eval_every: int
    space: dict[str, tuple[float, float]]
    """Knob -> ``(lo, hi)``: the tuner's log-uniform range and the kernel's hard bounds."""
    grid: dict[str, list[float]]
    """Knob -> values; the oracle trains every point of the product (every knob swept)."""
    hidden: int = 64
    depth: int = 1
    n_train: int | None = None
    """Cap on the training rows (tabular data): a tiny split overfits."""
    batch_size: int = 64
    aux_head: bool = False
    """Add a reconstruction head whose loss is weighted by the ``loss.aux`` knob."""
    context: int = 16
    """Characters the language model sees (``sklearn_descr`` only)."""
    embed: int = 16

    def __post_init__(self) -> None:
        for knob, (lo, hi) in self.space.items():
            if not 0 < lo < hi:
                raise ValueError(
                    f"{self.name}: space of {knob} must be 0 < lo < hi "
                    f"(log-uniform), got ({lo}, {hi})"
                )
        if set(self.grid) != set(self.space):
            raise ValueError(
                f"{self.name}: the grid must sweep exactly the space's knobs "
                f"{sorted(self.space)}, got {sorted(self.grid)}"
            )
        for knob, values in self.grid.items():
            outside = [v for v in values if not _within(v, self.space[knob])]
            if outside:
                raise ValueError(
                    f"{self.name}: grid values of {knob} outside {self.space[knob]}: {outside}"
                )
        if self.aux_head != ("loss.aux" in self.space):
            raise ValueError(
                f"{self.name}: aux_head={self.aux_head} needs 'loss.aux' "
                "in the space exactly when it is on"
            )
        if self.steps % self.eval_every:
            raise ValueError(
                f"{self.name}: steps ({self.steps}) must be a multiple of "
                f"eval_every ({self.eval_every})"
            )

    def grid_points(self) -> list[dict[str, float]]:
        """Every point of the oracle's grid, in a fixed order."""
        knobs = sorted(self.grid)
        return [
            dict(zip(knobs, vs, strict=True))
            for vs in itertools.product(*(self.grid[k] for k in knobs))
        ]


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """A setup started from one static configuration of its knobs.

    Raises:
        ValueError: when ``start`` misses a knob of the space or leaves its range.
    """

    name: str
    """``"<setup>/<config>"``, e.g. ``"digits/lr_high"``."""
    setup: Setup
    description: str
    start: dict[str, float]
    healthy: bool
    """True for the setup's good configuration."""

    def __post_init__(self) -> None:
        if not self.name.startswith(f"{self.setup.name}/"):
            raise ValueError(f"task name must be '{self.setup.name}/<config>', got {self.name!r}")
        if set(self.start) != set(self.setup.space):
            raise ValueError(
                f"{self.name}: start must set exactly the knobs "
                f"{sorted(self.setup.space)}, got {sorted(self.start)}"
            )
        for knob, value in self.start.items():
            if not _within(value, self.setup.space[knob]):
                raise ValueError(
                    f"{self.name}: {knob} must be within {self.setup.space[knob]}, got {value}"
                )


@dataclass(frozen=True, kw_only=True)
class TrainOutcome:
    """What one training run scored; the run directory holds everything else."""

    final: float
    """``val/loss`` at the last evaluation; nan or inf when the run blew up."""
    steps: list[int]
    values: list[float]
    """``val/loss`` at each of ``steps``."""
    wall_s: float
    """Seconds of the training loop under the kernel, ``on_tick`` included; loading the
    data (once per process) and building the model are not counted."""


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]
