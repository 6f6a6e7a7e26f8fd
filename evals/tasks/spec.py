"""The nouns of the task suite: a setup (data, model, length), a task (a setup started from
one configuration of its knobs, perhaps with a bug in its training loop) and the outcome of
training one.

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
class LoopBug:
    """A bug in the user's own training loop: once, at the start of step ``step`` (after the
    kernel applied the commands of ``kernel.step(step - 1)``, before the step's forward pass),
    the loop multiplies ``knob`` by ``factor`` itself, as ``group["lr"] *= factor`` in a
    hand-written loop would. The update of ``step`` is the first that uses the bad value; a
    command appended at the tick of ``step`` is applied by ``kernel.step(step + 1)``, so the
    quickest fix leaves two bad updates (``step`` and ``step + 1``).

    Raises:
        ValueError: for a step below 1 or a factor that is not a positive change.
    """

    step: int
    knob: str
    """``lr`` (every param group) or ``loss.<name>`` (an entry of the loss-weight dict)."""
    factor: float

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"a loop bug's step must be >= 1, got {self.step}")
        if not (self.factor > 0 and self.factor != 1):
            raise ValueError(f"a loop bug's factor must be > 0 and not 1, got {self.factor}")
        if self.knob != "lr" and not self.knob.startswith("loss."):
            raise ValueError(f"a loop bug changes lr or loss.<name>, got {self.knob!r}")


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
    bug: LoopBug | None = None
    """A bug of the training loop that fires mid-run (the start is then usually good). The
    oracle of a task with a bug is its setup's best grid point trained without it (the run
    the user meant); every policy, ``tune`` included, runs the user's loop, bug and all."""

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
        if self.bug is not None and self.bug.knob not in self.setup.space:
            raise ValueError(
                f"{self.name}: the loop bug's knob must be one of {sorted(self.setup.space)}, "
                f"got {self.bug.knob!r}"
            )
        if self.bug is not None and self.bug.step > self.setup.steps:
            raise ValueError(
                f"{self.name}: the loop bug's step must be within the run's "
                f"{self.setup.steps} steps, got {self.bug.step}"
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
