"""Recorded runs: a directory holding the kernel's ``metrics.jsonl`` (and the files it was
rotated into, ``metrics.<n>.jsonl``) and, optionally, the labels of the pathologies it
shows (``labels.json``).

``labels.json`` is ``{"events": [{"kind": "divergence", "onset_step": 500}]}``; no events (or
no file) means a healthy run. Other top-level fields (a source, notes) are kept as they are;
only ``events`` is validated. ``run.json``, when present, says what is known of the run's
horizon (``RunInfo``: ``max_steps``, the logging and evaluation cadence), as read from the
log it was imported from. The offline harness replays recorded runs through the
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

import difflib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evals.errors import RunFormatError
from kernel import MetricRecord
from kernel.jsonl import write_json_atomic
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_paths
from kernel.validation import summarize_validation_error

LABELS_FILE = "labels.json"
INFO_FILE = "run.json"
_LABELS_EXAMPLE = '{"events": [{"kind": "divergence", "onset_step": 500}]}'
# the kernel's spelling of values that JSON has no literal for (kernel/metrics.py)


class LabelEvent(BaseModel):
    """One labelled pathology: what it is and the first step that shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["plateau", "divergence", "overfitting"]
    onset_step: int = Field(ge=0)


class Labels(BaseModel):
    """``labels.json``: the run's pathologies; an empty list means a healthy run.

    Other fields (``source``, ``notes``...) are kept in ``model_extra`` and written back; a
    field spelt like ``events`` (``event``, ``Events``) is refused, since it would otherwise
    label a run healthy unnoticed.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    events: list[LabelEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_misspelt_events(self) -> Labels:
        for key in self.model_extra or {}:
            if difflib.get_close_matches(key.lower(), ["events"], n=1, cutoff=0.8):
                raise ValueError(f"{key!r} is not a field; did you mean 'events'?")
        return self

    @property
    def healthy(self) -> bool:
        return not self.events


class RunInfo(BaseModel):
    """``run.json``: the run's horizon and cadence as its source logged them (``None``:
    unknown). Written by importers that know them (``trainer_state.json`` does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = None
    max_steps: int | None = Field(default=None, ge=1)
    eval_steps: int | None = Field(default=None, ge=1)
    logging_steps: int | None = Field(default=None, ge=1)


@dataclass(frozen=True, kw_only=True)
class RecordedRun:
    """A recorded run directory; metric records are read on demand, not kept."""

    path: Path
    labels: Labels
    info: RunInfo = RunInfo()

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
        RunFormatError: ``metrics.jsonl`` is missing, or ``labels.json`` or ``run.json`` is
            malformed.
    """
    run_dir = Path(path)
    if not (run_dir / METRICS_FILE).is_file():
        raise RunFormatError(
            run_dir,
            f"no {METRICS_FILE}; a recorded run is a directory holding the kernel's "
            f"{METRICS_FILE} (import other formats with evals.importers)",
        )
    return RecordedRun(
        path=run_dir, labels=read_labels(run_dir / LABELS_FILE), info=_read_info(run_dir)
    )


def write_run(
    path: str | os.PathLike[str],
    records: Iterable[MetricRecord],
    labels: Labels | None = None,
    *,
    info: RunInfo | None = None,
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
    if info is not None:
        write_json_atomic(run_dir / INFO_FILE, info.model_dump(mode="json"))
    return load_run(run_dir)


def read_labels(path: Path) -> Labels:
    """The labels in ``path`` (healthy when there is no such file); ``RunFormatError`` names
    the bad field."""
    if not path.exists():
        return Labels()
    try:
        return Labels.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise RunFormatError(
            path, f"{summarize_validation_error(exc, limit=1)}; expected e.g. {_LABELS_EXAMPLE}"
        ) from None


def _read_info(run_dir: Path) -> RunInfo:
    path = run_dir / INFO_FILE
    if not path.exists():
        return RunInfo()
    try:
        return RunInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise RunFormatError(
            path, f"{summarize_validation_error(exc, limit=1)}; fix the field or delete the file"
        ) from None
