"""Recorded runs: a directory holding the kernel's ``metrics.jsonl`` (and the files it was
rotated into, ``metrics.<n>.jsonl``) and, optionally, the labels of the pathologies it
shows (``labels.json``).

``labels.json`` is ``{"events": [{"kind": "divergence", "onset_step": 500}]}``; no events (or
no file) means a healthy run. The offline harness replays recorded runs through the
autopilot and scores its diagnoses against these labels.

Example:
    >>> import tempfile
    >>> from kernel import MetricRecord
    >>> out = tempfile.mkdtemp()
    >>> run = write_run(out, [MetricRecord(step=1, metrics={"val/loss": float("nan")})])
    >>> run.records()[0].metrics
    {'val/loss': nan}
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.errors import RunFormatError
from kernel import MetricRecord
from kernel.jsonl import write_json_atomic
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_paths
from kernel.validation import summarize_validation_error

LABELS_FILE = "labels.json"
_LABELS_EXAMPLE = '{"events": [{"kind": "divergence", "onset_step": 500}]}'
# the kernel's spelling of values that JSON has no literal for (kernel/metrics.py)


class LabelEvent(BaseModel):
    """One labelled pathology: what it is and the first step that shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["plateau", "divergence", "overfitting"]
    onset_step: int = Field(ge=0)


class Labels(BaseModel):
    """``labels.json``: the run's pathologies; an empty list means a healthy run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[LabelEvent] = Field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.events


@dataclass(frozen=True, kw_only=True)
class RecordedRun:
    """A recorded run directory; metric records are read on demand, not kept."""

    path: Path
    labels: Labels

    @property
    def name(self) -> str:
        return self.path.name

    def records(self, segment: int | None = None) -> list[MetricRecord]:
        """The records of one run segment (the latest by default), in file order.

        A directory reused for a later run holds several segments whose steps start again
        at 0; a recorded run is one of them, never a splice. A malformed line raises
        ``RunFormatError``.
        """
        records = self._all_records()
        chosen = max((r.segment for r in records), default=0) if segment is None else segment
        return [r for r in records if r.segment == chosen]

    def segments(self) -> list[int]:
        """The run segments in the file, in order (``[0]`` for a directory used once)."""
        return sorted({r.segment for r in self._all_records()}) or [0]

    def _all_records(self) -> list[MetricRecord]:
        """Every record: the rotated files oldest first (``metrics.<n>.jsonl``), then
        ``metrics.jsonl``."""
        current = self.path / METRICS_FILE
        return [r for path in [*rotated_paths(current), current] for r in _read_records(path)]

    def curve(self, name: str) -> tuple[list[int], list[float | None]]:
        """``name`` over the run as ``(steps, values)``; a non-finite value is ``None``."""
        steps, values = [], []
        for record in self.records():
            if name in record.metrics:
                value = record.metrics[name]
                steps.append(record.step)
                values.append(value if math.isfinite(value) else None)
        return steps, values

    def metric_names(self) -> list[str]:
        """Every metric name logged in the run, sorted."""
        return sorted({name for record in self.records() for name in record.metrics})


def _read_records(path: Path) -> list[MetricRecord]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(MetricRecord.model_validate_json(line))
            except ValidationError as exc:
                raise RunFormatError(
                    path, f"line {number}: {summarize_validation_error(exc, limit=1)}"
                ) from None
    return records


def load_run(path: str | os.PathLike[str]) -> RecordedRun:
    """Open the recorded run at ``path``, validating ``labels.json`` (metrics load lazily).

    Raises:
        RunFormatError: ``metrics.jsonl`` is missing, or ``labels.json`` is malformed.
    """
    run_dir = Path(path)
    if not (run_dir / METRICS_FILE).is_file():
        raise RunFormatError(
            run_dir,
            f"no {METRICS_FILE}; a recorded run is a directory holding the kernel's "
            f"{METRICS_FILE} (import other formats with evals.importers)",
        )
    return RecordedRun(path=run_dir, labels=_read_labels(run_dir / LABELS_FILE))


def write_run(
    path: str | os.PathLike[str],
    records: Iterable[MetricRecord],
    labels: Labels | None = None,
) -> RecordedRun:
    """Write a recorded run into the directory ``path`` (created if needed) and return it.

    Lines are in the kernel's format, non-finite values spelt as the kernel spells them.
    ``wall_time`` is written when known and left out otherwise.

    Raises:
        RunFormatError: ``path`` already holds a ``metrics.jsonl``.
    """
    run_dir = Path(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / METRICS_FILE
    if target.exists():
        raise RunFormatError(
            target, "already exists; write the run into an empty directory or delete the file"
        )
    tmp = target.with_name(f".{METRICS_FILE}.{os.getpid()}.tmp")
    tmp.write_text("".join(record.to_line() for record in records), encoding="utf-8")
    os.replace(tmp, target)
    if labels is not None:
        write_json_atomic(run_dir / LABELS_FILE, labels.model_dump(mode="json"))
    return load_run(run_dir)


def _read_labels(path: Path) -> Labels:
    if not path.exists():
        return Labels()
    try:
        return Labels.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise RunFormatError(
            path, f"{summarize_validation_error(exc, limit=1)}; expected e.g. {_LABELS_EXAMPLE}"
        ) from None
