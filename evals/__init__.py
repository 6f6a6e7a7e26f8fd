"""Offline evaluation: recorded runs (``metrics.jsonl`` + ``labels.json``), importers from
CSV and TensorBoard, and a labelled corpus made by real training (``evals/corpus``,
rebuilt with ``python -m evals.make_corpus``)."""

from evals.errors import EvalError, RunFormatError
from evals.runs import LabelEvent, Labels, RecordedRun, infer_key_metric, load_run, write_run

__all__ = [
    "EvalError",
    "LabelEvent",
    "Labels",
    "RecordedRun",
    "RunFormatError",
    "infer_key_metric",
    "load_run",
    "write_run",
]
