"""Offline evaluation: recorded runs (``metrics.jsonl`` + ``labels.json``), importers from
CSV, TensorBoard and Hugging Face ``trainer_state.json``, a labelled corpus made by real
training and generated in the shapes of real logs (``evals/corpus``, rebuilt with
``python -m evals.make_corpus``), a development set of real published logs
(``evals/real_logs``: sources, labels, the written rule), the replay scorer and the
closed-loop bench (``autopilot eval replay|bench``).

The names below load on first use: ``autopilot`` imports ``evals.cli`` to build its parser
for every command, and that must not pull in numpy and the summary code.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalError": "evals.errors",
    "RunFormatError": "evals.errors",
    "LabelEvent": "evals.runs",
    "Labels": "evals.runs",
    "RecordedRun": "evals.runs",
    "load_run": "evals.runs",
    "write_run": "evals.runs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evals' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
