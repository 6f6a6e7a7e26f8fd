"""Import a CSV table of metrics (one row per step, one column per metric) as a recorded run.

Example:
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "m.csv").write_text("step,train/loss,val/loss\\n1,0.9,\\n2,0.8,nan\\n")
    >>> [r.metrics for r in import_csv(tmp / "m.csv", tmp / "run").records()]
    [{'train/loss': 0.9}, {'train/loss': 0.8, 'val/loss': nan}]
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from evals.errors import RunFormatError
from evals.importers._merge import Point, merge_by_step
from evals.runs import RecordedRun, write_run

WALL_TIME_COLUMN = "wall_time"


def import_csv(
    csv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    step_column: str = "step",
) -> RecordedRun:
    """Write the metrics of ``csv_path`` as a recorded run in ``out_dir`` and return it.

    Every column but ``step_column`` (and ``wall_time``, if present) is a metric, named as
    in the header. Empty cells are skipped; ``nan``/``inf`` are kept as non-finite values.
    Rows sharing a step are merged.

    Raises:
        RunFormatError: no step column, or a cell that is not a number.
    """
    path = Path(csv_path)
    with open(path, newline="", encoding="utf-8") as f:
        points = list(_points(csv.DictReader(f), path, step_column))
    return write_run(out_dir, merge_by_step(points))


def _points(reader: csv.DictReader[str], path: Path, step_column: str) -> Iterator[Point]:
    columns = reader.fieldnames or []
    if step_column not in columns:
        raise RunFormatError(
            path, f"no {step_column!r} column (columns: {columns}); pass step_column=..."
        )
    metrics = [c for c in columns if c not in (step_column, WALL_TIME_COLUMN)]
    for row in reader:
        where = f"row {reader.line_num}"
        step = _number(row[step_column], path, where, step_column)
        if step is None or not step.is_integer():
            raise RunFormatError(
                path, f"{where}, column {step_column!r}: a step must be an integer, got {step}"
            )
        wall_time = _number(row.get(WALL_TIME_COLUMN), path, where, WALL_TIME_COLUMN)
        for name in metrics:
            value = _number(row[name], path, where, name)
            if value is not None:
                yield Point(step=int(step), name=name, value=value, wall_time=wall_time)


def _number(cell: str | None, path: Path, where: str, column: str) -> float | None:
    if cell is None or not cell.strip():
        return None
    try:
        return float(cell)
    except ValueError:
        raise RunFormatError(
            path, f"{where}, column {column!r}: {cell!r} is not a number; fix or empty the cell"
        ) from None
