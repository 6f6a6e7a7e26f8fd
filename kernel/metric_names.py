"""Metric naming: the one home of what a metric's name says (its direction, its role).

The kernel, the autopilot and the offline evals all ask these questions; they must get the
same answers, or the replay scores a different rule from the one that runs live.
"""

from __future__ import annotations

from typing import Literal


def infer_mode(metric: str | None) -> Literal["min", "max"] | None:
    """Guess whether a metric is minimised or maximised from its name."""
    if metric is None:
        return None
    name = metric.lower()
    if any(w in name for w in ("loss", "error", "perplexity", "ppl", "mse", "mae", "rmse")):
        return "min"
    if any(w in name for w in ("acc", "f1", "auc", "precision", "recall", "bleu", "score", "r2")):
        return "max"
    return None


__all__ = ["infer_mode"]
