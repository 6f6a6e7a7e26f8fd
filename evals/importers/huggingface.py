"""Import a Hugging Face Trainer's ``trainer_state.json`` (its ``log_history``) as a recorded run.

Names are the ones the live ``AutopilotTrainerCallback`` records
(``kernel.adapters.hf_names``): ``loss`` -> ``train/loss``, ``eval_loss`` -> ``val/loss``,
``learning_rate`` -> ``lr``, ``grad_norm`` -> ``grad/norm``, any other ``eval_<name>`` ->
``val/<name>``, ``train_<name>`` and any other plain key -> ``train/<name>``; a name with a
``/`` (``rewards/chosen``...) is kept.
Bookkeeping is dropped: ``epoch``, ``total_flos``, ``num_input_tokens_seen``, runtimes and
throughputs, and the closing summary's ``train_loss`` (a mean over the whole run, not a point
of the curve). Train and eval entries at one step become one record; ``NaN`` and infinities
are kept; a ``null`` value is skipped, and so is a list or an object (per-class thresholds,
a confusion matrix), with a warning naming the key. ``max_steps``, ``eval_steps`` and
``logging_steps`` go to ``run.json`` (``RunInfo``); a ``labels.json`` beside the file is
carried over.

Example:
    >>> import json, pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> history = [{"step": 10, "loss": 0.9, "learning_rate": 1e-4, "epoch": 0.1},
    ...            {"step": 10, "eval_loss": float("nan"), "eval_accuracy": 0.6}]
    >>> _ = (tmp / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    >>> [r.metrics for r in import_trainer_state(tmp, tmp / "run").records()]
    [{'train/loss': 0.9, 'lr': 0.0001, 'val/loss': nan, 'val/accuracy': 0.6}]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evals.errors import RunFormatError
from evals.importers._merge import Point, merge_by_step
from evals.runs import LABELS_FILE, RecordedRun, RunInfo, read_labels, write_run
from kernel.adapters.hf_names import kernel_metric_name

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
DROPPED = frozenset({"step", "epoch", "total_flos", "train_loss", "num_input_tokens_seen"})
_DROPPED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def import_trainer_state(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> RecordedRun:
    """Write the ``log_history`` of ``path`` (a ``trainer_state.json``, or a directory holding
    one directly) as a recorded run in ``out_dir`` and return it.

    Raises:
        RunFormatError: no such file, not JSON, no ``log_history`` list, an entry without an
            integer ``step``, or a value that is not a number.
    """
    file = trainer_state_path(path)
    if file is None:
        raise RunFormatError(Path(path), f"no {TRAINER_STATE_FILE}; pass the file or its directory")
    state = _load(file)
    history = state.get("log_history")
    if not isinstance(history, list):
        raise RunFormatError(file, "no 'log_history' list; is this a Trainer's state file?")
    labels_path = file.parent / LABELS_FILE
    labels = read_labels(labels_path) if labels_path.exists() else None
    info = RunInfo(
        source=TRAINER_STATE_FILE,
        **{k: _positive(state.get(k)) for k in ("max_steps", "eval_steps", "logging_steps")},
    )
    skipped: set[str] = set()
    run = write_run(out_dir, merge_by_step(_points(history, file, skipped)), labels, info=info)
    if skipped:
        logger.warning(
            "%s: not imported, not numbers (lists or objects): %s", file, ", ".join(sorted(skipped))
        )
    return run


def trainer_state_path(path: str | os.PathLike[str]) -> Path | None:
    """``path`` itself when it is a ``trainer_state.json``, the one directly inside it when it
    is a directory, else ``None`` (checkpoint subdirectories are not searched)."""
    p = Path(path)
    if p.is_file() and p.name == TRAINER_STATE_FILE:
        return p
    inside = p / TRAINER_STATE_FILE
    return inside if p.is_dir() and inside.is_file() else None


def metric_name(key: str) -> str | None:
    """The project's name for a ``log_history`` key, ``None`` for bookkeeping."""
    if key in DROPPED or key.endswith(_DROPPED_SUFFIXES):
        return None
    return kernel_metric_name(key)  # the names the live callback records


def _load(file: Path) -> dict[str, Any]:
    try:  # the Trainer writes NaN and Infinity literals, which json reads
        state = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"not JSON ({exc}); pass a Trainer's {TRAINER_STATE_FILE}"
        raise RunFormatError(file, msg) from None
    if not isinstance(state, dict):
        raise RunFormatError(file, f"expected a JSON object, got {type(state).__name__}")
    return state


def _points(history: list[Any], file: Path, skipped: set[str]) -> Iterator[Point]:
    for index, entry in enumerate(history):
        where = f"log_history[{index}]"
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise RunFormatError(file, f"{where}: no integer 'step' (got {entry!r:.80})")
        for key, value in entry.items():
            name = metric_name(key)
            if name is None or value is None:
                continue
            if isinstance(value, list | dict):
                skipped.add(key)  # per-class thresholds, confusion matrices: no curve
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RunFormatError(file, f"{where}, {key!r}: {value!r:.40} is not a number")
            yield Point(step=step, name=name, value=float(value))


def _positive(value: Any) -> int | None:
    """A cadence or horizon; the Trainer writes 0 or a fraction for 'not set' or 'ratio'."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
