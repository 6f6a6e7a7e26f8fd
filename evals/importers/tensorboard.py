"""Import the scalars of TensorBoard event files as a recorded run.

Needs the ``tensorboard`` package (imported on first use). Scalars logged under different
tags at the same step become one metric record; tag names are kept (``train/loss``).

Example:
    >>> import tempfile
    >>> from torch.utils.tensorboard import SummaryWriter
    >>> logdir, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> with SummaryWriter(logdir) as w:
    ...     w.add_scalar("val/loss", 0.5, global_step=10)
    >>> [(r.step, r.metrics) for r in import_tensorboard(logdir, out).records()]
    [(10, {'val/loss': 0.5})]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evals.errors import EvalError, RunFormatError
from evals.importers._merge import Point, merge_by_step
from evals.runs import RecordedRun, write_run


def import_tensorboard(
    event_dir_or_file: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> RecordedRun:
    """Write the scalars of an event file, or of the event files in a directory, as a
    recorded run in ``out_dir`` and return it. Subdirectories are not searched.

    Raises:
        EvalError: ``tensorboard`` is not installed.
        RunFormatError: the path holds no scalar summaries.
    """
    path = Path(event_dir_or_file)
    if not path.exists():
        raise RunFormatError(path, "does not exist; pass an event file or its directory")
    accumulator = _accumulator(path)
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    if not tags:
        raise RunFormatError(
            path,
            "no scalar summaries found; pass the directory holding the events.out.tfevents.* "
            "files (subdirectories, e.g. from add_scalars, are imported one at a time)",
        )
    points = [
        Point(step=event.step, name=tag, value=float(event.value), wall_time=event.wall_time)
        for tag in tags
        for event in accumulator.Scalars(tag)
    ]
    return write_run(out_dir, merge_by_step(points))


def _accumulator(path: Path) -> Any:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as exc:
        raise EvalError(
            "importing TensorBoard event files needs the tensorboard package: "
            "pip install tensorboard"
        ) from exc
    return EventAccumulator(str(path), size_guidance={"scalars": 0})
