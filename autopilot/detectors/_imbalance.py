"""Imbalance: one weighted loss term dominates the total the optimizer follows.

A loop with ``loss_weights`` that logs each term by the convention ``train/loss/<key>``
(unweighted, beside the weighted total ``train/loss``; ``kernel.metric_names``) lets the
autopilot see each term's share of the total: ``weight * term / total``, with the weight the
kernel publishes as the knob ``loss.<key>``. A term above ``share`` of the total over its
latest points, while the key metric is something else (``val/loss`` of the main task), takes
most of every gradient step for a goal the run is not judged by: the rules down-weight it
step by step, each step measured.
"""

from __future__ import annotations

import numpy as np

from autopilot._trends import series
from autopilot.detectors._base import check_int, num
from autopilot.diagnoses import Diagnosis, Evidence
from autopilot.summary import RunSummary, Windows
from kernel.knobs.simple import loss_weight_knob
from kernel.metric_names import LOSS_TERM_PREFIX, loss_term_metric

TOTAL = "train/loss"


class ImbalanceDetector:
    """A loss term whose weighted share of ``train/loss`` stays above ``share``.

    Args:
        share: the share of the total above which a term dominates (0 < share < 1).
        min_points: the latest points over which the share must hold (>= 3).

    Raises:
        ConfigError: when a parameter is out of its range.
    """

    name = "imbalance"

    def __init__(self, *, share: float = 0.5, min_points: int = 5) -> None:
        from autopilot.errors import ConfigError

        if not 0 < share < 1:
            raise ConfigError(f"share must be between 0 and 1, got {share}")
        self.share = share
        self.min_points = check_int("min_points", min_points, 3)

    def detect(self, summary: RunSummary, windows: Windows) -> list[Diagnosis]:
        total = windows.get(TOTAL)
        if total is None or not summary.loss_weights:
            return []
        found = []
        for term, weight in sorted(summary.loss_weights.items()):
            name = loss_term_metric(term)
            if name not in windows or summary.key_metric.startswith(name) or weight <= 0:
                continue
            share = _share(windows[name], total, weight, self.min_points)
            if share is not None and share > self.share:
                found.append(self._diagnosis(summary, term, weight, share))
        return sorted(found, key=lambda d: -float(d.evidence["share"] or 0))[:1]

    def _diagnosis(self, summary: RunSummary, term: str, weight: float, share: float) -> Diagnosis:
        knob = loss_weight_knob(term)
        message = (
            f"{LOSS_TERM_PREFIX}{term} weighted by {knob}={num(weight)} is {share:.0%} of "
            f"{TOTAL} over its latest {self.min_points} points (above {self.share:.0%}), while "
            f"the run is judged by {summary.key_metric}: most of each step serves that term"
        )
        evidence: Evidence = {"term": term, "knob": knob, "weight": weight, "share": share}
        return Diagnosis(
            kind="imbalance",
            metric=loss_term_metric(term),
            step=summary.step,
            severity="medium",
            message=message,
            evidence=evidence,
        )


def _share(
    term: list[list[float]], total: list[list[float]], weight: float, points: int
) -> float | None:
    """The median of ``weight * term / total`` over the latest ``points`` steps both logged.

    Example:
        >>> _share([[1, 2, 3], [1.0, 1.0, 1.0]], [[1, 2, 3], [2.0, 2.0, 4.0]], 1.0, 3)
        0.5
    """
    t_steps, t_values = series(term)
    s_steps, s_values = series(total)
    common, ti, si = np.intersect1d(t_steps, s_steps, return_indices=True)
    if len(common) < points:
        return None
    part, whole = t_values[ti][-points:], s_values[si][-points:]
    ok = np.isfinite(part) & np.isfinite(whole) & (whole > 0)
    if ok.sum() < points:
        return None
    return float(np.median(weight * part[ok] / whole[ok]))
