"""Label a Hugging Face ``trainer_state.json`` by the written rule in ``LABELING.md``.

Usage: ``python -m evals.real_logs.label DIR`` prints one JSON line per
``DIR/<owner>/<repo>/<path>/trainer_state.json`` found (repo, path, steps, eval points, eval
cadence, label and the numbers that decided it).

Example:
    >>> rows = [{"step": s, "loss": 2.0 / s} for s in range(1, 41)]
    >>> label_log_history(rows).label
    'healthy'
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Label = Literal["healthy", "overfitting", "plateau", "divergence"]
Series = list[tuple[int, float]]

OVERFIT_RISE = 0.15  # smoothed eval loss ends this far above its minimum
PLATEAU_TAIL = 0.4  # the last fraction of the run judged for a plateau
PLATEAU_GAIN = 0.01  # a gain at most this over the tail is no gain
STILL_HIGH = 0.5  # final train loss at least this fraction of its initial level
BLOWUP_FACTOR = 2.0  # smoothed train loss above this multiple of its running minimum ...
BLOWUP_SCALE = 0.5  # ... and above it by this fraction of its initial level ...
BLOWUP_POINTS = 5  # ... for this many consecutive logged points


@dataclass(frozen=True, kw_only=True)
class RunLabel:
    """A run's label, its shape, and the numbers the rule read to decide it."""

    label: Label
    steps: int
    train_points: int
    eval_points: int
    eval_cadence: int | None
    numbers: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def onset_step(self) -> int | None:
        """The first step that shows the labelled problem (``LABELING.md``, "Onsets");
        ``None`` for a healthy run."""
        n = self.numbers
        if self.label == "divergence":
            found = [s for s in (n.get("first_non_finite_step"), n.get("blowup_step")) if s]
            return int(min(found)) if found else None
        if self.label == "overfitting":
            return _int(n.get("eval_min_step"))
        if self.label == "plateau":
            return _int(n.get("plateau_from_step"))
        return None


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def _series(rows: Sequence[dict[str, Any]], key: str) -> Series:
    return [(int(r["step"]), float(r[key])) for r in rows if key in r and "step" in r]


def _smooth(values: Sequence[float], half: int, *, median: bool) -> list[float]:
    """A centred window of ``2 * half + 1`` points, narrowed on short series (n // 4 each side)."""
    half = min(half, max(0, (len(values) - 1) // 4))
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half) : i + half + 1]
        out.append(statistics.median(window) if median else statistics.fmean(window))
    return out


def _first_non_finite(rows: Sequence[dict[str, Any]]) -> int | None:
    keys = ("loss", "eval_loss", "grad_norm")
    bad = [int(r["step"]) for r in rows for k in keys if k in r and not _finite(r[k])]
    return min(bad) if bad else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _blowup_step(train: Series) -> int | None:
    """The first step of a sustained blow-up of the smoothed train loss, if any."""
    if len(train) < BLOWUP_POINTS:
        return None
    smooth = _smooth([v for _, v in train], 2, median=True)
    scale, run_min, streak = smooth[0], smooth[0], 0
    for i, value in enumerate(smooth):
        high = value > BLOWUP_FACTOR * run_min and value - run_min > BLOWUP_SCALE * scale
        streak = streak + 1 if high else 0
        if streak >= BLOWUP_POINTS:
            return train[i - streak + 1][0]
        run_min = min(run_min, value)
    return None


def _near(train: Series, step: int, radius: float) -> float:
    window = [v for s, v in train if abs(s - step) <= radius]
    if not window:
        window = [min(train, key=lambda p: abs(p[0] - step))[1]]
    return statistics.median(window)


def _overfitting(train: Series, evals: Series, steps: int) -> dict[str, Any] | None:
    """The overfitting numbers, or None where there are too few evaluations to judge."""
    if len(evals) < 4 or not train:
        return None
    values = [v for _, v in evals]
    smooth = _smooth(values, 1, median=False)
    i_min = values.index(min(values))
    min_step = evals[i_min][0]
    train_end = statistics.median([v for s, v in train if s >= 0.9 * steps] or [train[-1][1]])
    train_at_min = _near(train, min_step, 0.05 * steps)
    return {
        "eval_min_step": min_step,
        "eval_min_index_from_end": len(values) - 1 - i_min,
        "eval_end_over_min": round(smooth[-1] / min(smooth) - 1, 4),
        "train_end_over_at_eval_min": round(train_end / train_at_min - 1, 4),
    }


def _tail_gain(series: Series, steps: int, half: int, *, median: bool) -> float | None:
    """Relative best improvement over the last ``PLATEAU_TAIL`` of the run, smoothed."""
    start = (1 - PLATEAU_TAIL) * steps
    smooth = _smooth([v for _, v in series], half, median=median)
    before = [i for i, (s, _) in enumerate(series) if s <= start]
    after = [v for (s, _), v in zip(series, smooth, strict=True) if s > start]
    if not before or not after or smooth[before[-1]] <= 0:
        return None
    ref = smooth[before[-1]]
    return round((ref - min(after)) / ref, 4)


def _progress_stopped(series: Series) -> int | None:
    """The first step after which the smoothed train loss never again improves by more than
    ``PLATEAU_GAIN`` of its value there: where progress stopped."""
    smooth = _smooth([v for _, v in series], 2, median=True)
    floor, stopped = math.inf, None
    for i in range(len(smooth) - 1, -1, -1):  # from the end: ``floor`` is what follows
        if smooth[i] <= 0 or (smooth[i] - floor) / smooth[i] > PLATEAU_GAIN:
            break
        stopped, floor = series[i][0], min(floor, smooth[i])
    return stopped


def _decide(numbers: dict[str, Any], has_overfit: bool) -> Label:
    if numbers["first_non_finite_step"] is not None or numbers["blowup_step"] is not None:
        return "divergence"
    if (
        has_overfit
        and numbers["eval_min_index_from_end"] >= 2
        and numbers["eval_end_over_min"] >= OVERFIT_RISE
        and numbers["train_end_over_at_eval_min"] < -0.01
    ):
        return "overfitting"
    gains = [g for g in (numbers["train_gain_tail"], numbers["eval_gain_tail"]) if g is not None]
    high = (numbers["train_end_over_start"] or 0.0) >= STILL_HIGH
    if numbers["train_gain_tail"] is not None and high and max(gains) <= PLATEAU_GAIN:
        return "plateau"
    return "healthy"


def label_log_history(rows: Sequence[dict[str, Any]], *, steps: int | None = None) -> RunLabel:
    """Label one run from its ``log_history`` rows (``steps`` defaults to the last step)."""
    train = [p for p in _series(rows, "loss") if math.isfinite(p[1])]
    evals = [p for p in _series(rows, "eval_loss") if math.isfinite(p[1])]
    total = steps or max((int(r.get("step", 0)) for r in rows), default=0)
    overfit = _overfitting(train, evals, total)
    start = _smooth([v for _, v in train], 2, median=True) if train else []
    numbers: dict[str, Any] = {
        "first_non_finite_step": _first_non_finite(rows),
        "blowup_step": _blowup_step(train),
        **(overfit or dict.fromkeys(_OVERFIT_KEYS)),
        "train_gain_tail": _tail_gain(train, total, 2, median=True) if train else None,
        "eval_gain_tail": _tail_gain(evals, total, 1, median=False) if evals else None,
        "train_end_over_start": round(start[-1] / start[0], 4) if start and start[0] else None,
    }
    label = _decide(numbers, overfit is not None)
    if label == "plateau":
        numbers["plateau_from_step"] = _progress_stopped(train)
    gaps = [b[0] - a[0] for a, b in zip(evals, evals[1:], strict=False)]
    return RunLabel(
        label=label,
        steps=total,
        train_points=len(train),
        eval_points=len(evals),
        eval_cadence=int(statistics.median(gaps)) if gaps else None,
        numbers=numbers,
    )


_OVERFIT_KEYS = (
    "eval_min_step",
    "eval_min_index_from_end",
    "eval_end_over_min",
    "train_end_over_at_eval_min",
)


def label_file(path: Path) -> RunLabel:
    """Label one ``trainer_state.json`` file."""
    state = json.loads(path.read_text())
    return label_log_history(state["log_history"], steps=state.get("global_step") or None)


def label_dir(root: str | Path) -> list[dict[str, Any]]:
    """Label every ``<owner>/<repo>/<path>`` trainer_state.json under ``root``."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("trainer_state.json")):
        rel = path.relative_to(root).parts
        label = label_file(path)
        out.append(
            {
                "repo": "/".join(rel[:2]),
                "path": "/".join(rel[2:]),
                "steps": label.steps,
                "eval_points": label.eval_points,
                "eval_cadence": label.eval_cadence,
                "label": label.label,
                "numbers": label.numbers,
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line per labelled run under the directory given as the argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m evals.real_logs.label DIR\n")
        return 2
    for row in label_dir(args[0]):
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
