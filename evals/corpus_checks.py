"""Label checks of the corpus: does a labelled pathology really show in its curves?

``python -m evals.make_corpus`` drops a run whose label fails here; the tests run the same
checks on the shipped corpus. ``check_rule`` also holds a run to the written rule that labels
real Hugging Face logs (``evals/real_logs/LABELING.md``): a generated run is written only when
the rule gives it the label it was generated for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evals.real_logs.label import label_log_history
from evals.runs import Labels
from kernel import MetricRecord
from kernel.adapters.hf_names import RENAMES

KEY_METRIC = "val/loss"
JUMP_WINDOW = 20  # train steps in the trailing mean that divergence is judged on
VAL_WINDOW = 5  # evaluations in the centred mean that overfitting is judged on
BLOWUP_LATENCY = 100  # steps from a divergence's onset to the jump that shows it


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Whether a label holds on its curves, and why not."""

    ok: bool
    reason: str = ""


Curve = tuple[np.ndarray, np.ndarray]  # steps, values


def read_curves(run_dir: Path) -> dict[str, Curve]:
    """Every metric of ``metrics.jsonl`` as ``(steps, values)``; non-finite values kept."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return curves_of(MetricRecord.model_validate_json(line) for line in lines)


def curves_of(records: Iterable[MetricRecord]) -> dict[str, Curve]:
    """Every metric of ``records`` as ``(steps, values)``; non-finite values kept."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for name, value in record.metrics.items():
            steps, values = series.setdefault(name, ([], []))
            steps.append(record.step)
            values.append(value)
    return {n: (np.array(s), np.array(v, dtype=float)) for n, (s, v) in series.items()}


def _mean(values: np.ndarray, before: int, after: int) -> np.ndarray:
    """Mean over ``[i - before, i + after]`` (shrunk at the edges); non-finite counts as 1e6."""
    v = np.clip(np.nan_to_num(values, nan=1e6, posinf=1e6, neginf=-1e6), -1e6, 1e6)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(len(v))
    lo, hi = np.maximum(i - before, 0), np.minimum(i + after + 1, len(v))
    return (c[hi] - c[lo]) / (hi - lo)


def first_jump(curves: dict[str, Curve]) -> int | None:
    """First step where the trailing mean of train/loss doubles over its best so far."""
    steps, values = curves["train/loss"]
    trail = _mean(values, JUMP_WINDOW - 1, 0)[JUMP_WINDOW:]
    best = np.minimum.accumulate(trail)
    jumps = np.flatnonzero((trail >= 2 * best) & (trail - best >= 0.1 * trail[0]))
    return int(steps[JUMP_WINDOW + jumps[0]]) if len(jumps) else None


def smoothed_argmin(curves: dict[str, Curve]) -> int:
    """The step of the minimum of the centred-mean validation loss (overfitting onset)."""
    steps, values = curves[KEY_METRIC]
    half = VAL_WINDOW // 2
    return int(steps[int(np.argmin(_mean(values, half, half)))])


def _lr_changes_at(curves: dict[str, Curve], onset: int) -> bool:
    steps, lr = curves["lr"]
    at = np.searchsorted(steps, onset)
    return bool(0 < at < len(steps) and steps[at] == onset and lr[at] != lr[at - 1])


def _no_jump(curves: dict[str, Curve]) -> Verdict:
    jump = first_jump(curves)
    return Verdict(ok=True) if jump is None else Verdict(ok=False, reason=f"jump at {jump}")


def check_healthy(curves: dict[str, Curve]) -> Verdict:
    """Val loss ends well below its start, does not rise off its minimum, no jump."""
    _, val = curves[KEY_METRIC]
    half = VAL_WINDOW // 2
    smooth = _mean(val, half, half)
    if not np.isfinite(val).all():
        return Verdict(ok=False, reason="non-finite val/loss")
    if smooth[-1] > 0.8 * val[0]:
        return Verdict(ok=False, reason=f"val/loss ends at {smooth[-1]:.4g} from {val[0]:.4g}")
    if smooth[-1] > 1.1 * smooth.min():
        return Verdict(ok=False, reason=f"val/loss rose to {smooth[-1]:.4g} >10% off its min")
    return _no_jump(curves)


def check_divergence(curves: dict[str, Curve], onset: int) -> Verdict:
    """The lr changes at the onset and train/loss first doubles within ``BLOWUP_LATENCY``
    steps of it. The lr test tells an injected rise only where the lr is otherwise constant; a
    scheduled lr changes at every logged step, and the written rule (``check_rule``) judges
    such a run."""
    if not _lr_changes_at(curves, onset):
        return Verdict(ok=False, reason=f"lr does not change at step {onset}")
    jump = first_jump(curves)
    if jump is None or not onset <= jump <= onset + BLOWUP_LATENCY:
        return Verdict(ok=False, reason=f"first train/loss jump at {jump}, onset {onset}")
    return Verdict(ok=True)


def check_plateau(curves: dict[str, Curve], onset: int) -> Verdict:
    """Val loss was still improving before the onset and stays flat (within 1-5%) after it."""
    if not _lr_changes_at(curves, onset):
        return Verdict(ok=False, reason=f"lr does not change at step {onset}")
    steps, val = curves[KEY_METRIC]
    at = int(np.searchsorted(steps, onset, side="right")) - 1
    # 100 steps back, or the evaluation before the onset when evaluations are further apart
    earlier = min(int(np.searchsorted(steps, onset - 100)), at - 1)
    if at < 1 or val[at] > 0.97 * val[earlier]:
        return Verdict(ok=False, reason=f"val/loss not improving before {onset}")
    after = val[at + 1 :]
    if after.min() < 0.99 * val[at] or after.max() > 1.05 * val[at]:
        return Verdict(ok=False, reason=f"val/loss moves after {onset}: {after.min():.4g}")
    return _no_jump(curves)


def check_overfitting(curves: dict[str, Curve], onset: int) -> Verdict:
    """Onset is the smoothed val/loss minimum, mid-run; val then rises >=10%, train falls."""
    steps, val = curves[KEY_METRIC]
    half = VAL_WINDOW // 2
    smooth = _mean(val, half, half)
    if smoothed_argmin(curves) != onset or not 0.05 * steps[-1] <= onset <= 0.8 * steps[-1]:
        return Verdict(ok=False, reason=f"onset {onset} is not a mid-run val/loss minimum")
    if smooth[-1] < 1.1 * smooth.min():
        return Verdict(ok=False, reason=f"val/loss rises only to {smooth[-1] / smooth.min():.3g}x")
    train_steps, train = curves["train/loss"]
    trail = _mean(train, JUMP_WINDOW - 1, 0)
    at = int(np.searchsorted(train_steps, onset))
    if trail[-1] > 0.8 * trail[at]:
        return Verdict(ok=False, reason=f"train/loss stops falling after {onset}")
    return Verdict(ok=True)


def check_label(curves: dict[str, Curve], labels: Labels) -> Verdict:
    """Whether ``labels`` hold on ``curves``."""
    if not labels.events:
        return check_healthy(curves)
    event = labels.events[0]
    check = {"divergence": check_divergence, "plateau": check_plateau}.get(event.kind)
    if check is not None:
        return check(curves, event.onset_step)
    return check_overfitting(curves, event.onset_step)


_HF_KEYS = {kernel: hf for hf, kernel in RENAMES.items()}  # train/loss -> loss ...


def hf_rows(records: Iterable[MetricRecord]) -> list[dict[str, Any]]:
    """``records`` back as a Trainer's ``log_history`` rows (``loss``, ``eval_loss``...): a
    train row and, at an evaluation, an eval row per step, as the Trainer logs them."""
    rows = []
    for record in records:
        named = {_HF_KEYS.get(k, k): v for k, v in record.metrics.items()}
        train = {k: v for k, v in named.items() if not k.startswith("val/")}
        evals = {"eval_" + k[4:]: v for k, v in named.items() if k.startswith("val/")}
        rows += [{"step": record.step, **part} for part in (train, evals) if part]
    return rows


def rule_label(records: Iterable[MetricRecord], steps: int | None = None) -> str:
    """The written rule's label of ``records`` (``LABELING.md``; ``steps``: the run's length)."""
    return label_log_history(hf_rows(records), steps=steps).label


def check_rule(records: list[MetricRecord], labels: Labels, steps: int | None = None) -> Verdict:
    """Whether the written rule gives ``records`` the kind ``labels`` say (or healthy), and a
    divergence's blow-up (or first non-finite value) within ``BLOWUP_LATENCY`` of its onset."""
    result = label_log_history(hf_rows(records), steps=steps)
    want = labels.events[0].kind if labels.events else "healthy"
    if result.label != want:
        numbers = ", ".join(f"{k}={v}" for k, v in result.numbers.items() if v is not None)
        return Verdict(ok=False, reason=f"the written rule says {result.label} ({numbers})")
    if want == "divergence":
        onset = labels.events[0].onset_step
        found = [result.numbers.get(k) for k in ("first_non_finite_step", "blowup_step")]
        blowup = min(int(s) for s in found if s is not None)
        if not onset <= blowup <= onset + BLOWUP_LATENCY:
            return Verdict(ok=False, reason=f"the rule's blow-up is at {blowup}, onset {onset}")
    return Verdict(ok=True)
