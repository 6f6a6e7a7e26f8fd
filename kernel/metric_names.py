"""Metric naming: the one home of what a metric's name says (its direction, its role, the
run's key metric).

The kernel, the autopilot and the offline evals all ask these questions; they must get the
same answers, or the replay scores a different rule from the one that runs live.

Example:
    >>> metric_mode("val/recall_error"), metric_mode("val/iou"), metric_mode("eval/mAP@50")
    ('min', 'max', 'max')
    >>> split_role("val_loss"), split_role("lr")
    (('val', 'loss'), ('', 'lr'))
    >>> infer_key_metric(["train/loss", "val_loss", "lr"])
    'val_loss'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Literal

MetricMode = Literal["min", "max"]
DEFAULT_KEY_METRIC = "val/loss"

_MIN_WORDS = frozenset(
    {"loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "mape", "nll"}
    | {"wer", "cer", "bpc", "bpb", "fid"}
)
"""Words of a measure that is lower when better; one of them decides the name."""
_MAX_WORDS = frozenset(
    {"acc", "accuracy", "f1", "auc", "precision", "recall", "score", "bleu", "rouge", "iou"}
    | {"miou", "map", "ap", "dice", "r2"}
)
_NUMBERED = _MAX_WORDS - {"f", "r"}
"""Max words that may carry a number (``acc1``, ``map50``): never ``f`` or ``r`` alone."""
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[/_.\-\s@:]+")
_ROLE = re.compile(r"^(train|training|val|valid|validation|eval)[/_.\-](.+)$", re.IGNORECASE)


def name_tokens(name: str) -> list[str]:
    """The lower-case words of a metric name: ``"val/top1_acc"`` -> ``["val", "top1", "acc"]``,
    ``"valLoss"`` -> ``["val", "loss"]``."""
    return [t for t in _SPLIT.split(_CAMEL.sub("_", name).lower()) if t]


@functools.lru_cache(maxsize=4096)
def named_mode(name: str) -> MetricMode | None:
    """The direction a metric's name states, or ``None`` when it states none (``lr``).

    Whole words count, so ``bitmap_loss`` is a loss, not a mAP. A word of an error measure
    (loss, error, mse, ppl...) wins over a word of a score: ``val/recall_error`` is an error
    and ``val/mse_score`` an MSE. A ``neg`` word (scikit-learn's ``neg_mean_squared_error``)
    turns the direction round.
    """
    tokens = name_tokens(name)
    mode: MetricMode | None = None
    if any(t in _MIN_WORDS for t in tokens):
        mode = "min"
    elif any(t in _MAX_WORDS or t.rstrip("0123456789") in _NUMBERED for t in tokens):
        mode = "max"
    elif is_loss(name) or "error" in name.lower():
        mode = "min"  # glued words: "trainloss"
    if mode is not None and "neg" in tokens:
        return "max" if mode == "min" else "min"
    return mode


GRAD_NORM = "grad/norm"
"""The gradient norm ``Kernel.clip_grad_norm_`` records."""
LOSS_TERM_PREFIX = "train/loss/"
"""The convention for loss terms: a loop with ``loss_weights`` logs each term's unweighted
value as ``train/loss/<key>`` beside the weighted total ``train/loss``, so the autopilot can
tell a term that dominates the total (``autopilot.detectors._imbalance``)."""


def loss_term_metric(key: str) -> str:
    """The metric name of the loss term weighted by ``loss_weights[key]``.

    Example:
        >>> loss_term_metric("aux")
        'train/loss/aux'
    """
    return f"{LOSS_TERM_PREFIX}{key}"


def is_loss(name: str) -> bool:
    """Whether ``name`` is a loss or a part of one (``train/loss``, ``aux_loss``,
    ``trainloss``)."""
    return "loss" in name.lower()


def metric_mode(name: str) -> MetricMode:
    """``"min"`` or ``"max"``: what :func:`named_mode` says, ``"min"`` when the name says
    nothing (most unnamed monitors, like a norm or a rate, are watched for growth)."""
    return named_mode(name) or "min"


@functools.lru_cache(maxsize=4096)
def split_role(name: str) -> tuple[str, str]:
    """``("val", "loss")`` for ``val/loss``, ``val_loss`` or ``eval_loss``; ``("train",
    "loss")`` for ``train/loss``; ``("", name)`` without a prefix."""
    match = _ROLE.match(name)
    if not match:
        return "", name
    role = match.group(1).lower()
    return ("train" if role.startswith("train") else "val"), match.group(2)


def metric_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(train, val)`` name pairs: ``train/X`` (or ``train_X``, or plain ``X``) with ``val/X``."""
    return list(_pairs(tuple(names)))


@functools.lru_cache(maxsize=64)
def _pairs(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # a run logs the same names tick after tick: the summary and a detector ask each time
    present, pairs = set(names), []
    for val in sorted(names):
        role, base = split_role(val)
        if role != "val":
            continue
        sep = val[len(val) - len(base) - 1]  # the same style first: eval_loss goes with loss
        candidates = (f"train{sep}{base}", f"training{sep}{base}", base, f"train/{base}")
        train = next((c for c in candidates if c in present), None)
        if train is not None:
            pairs.append((train, val))
    return tuple(pairs)


def infer_key_metric(names: Iterable[str]) -> str | None:
    """The metric to judge a run by when none is declared; ``None`` when nothing fits.

    In order: ``val/loss``; another validation loss (``val_loss``, ``eval_loss``,
    ``valid/loss``); any validation loss-like metric (``val/ce_loss``, ``val/ppl``); the
    training loss (``train/loss``, ``train_loss``, ``loss``); any loss; a validation metric
    whose name says its direction (``val/acc``). Ties go to the first name in sorted order.
    """
    ordered = sorted(set(names))
    roles = {n: split_role(n) for n in ordered}
    tiers = (
        lambda n: n == DEFAULT_KEY_METRIC,
        lambda n: roles[n] == ("val", "loss"),
        lambda n: roles[n][0] == "val" and named_mode(n) == "min",
        lambda n: roles[n][0] != "val" and roles[n][1] == "loss",
        is_loss,
        lambda n: roles[n][0] == "val" and named_mode(n) is not None,
    )
    for tier in tiers:
        match = next((n for n in ordered if tier(n)), None)
        if match is not None:
            return match
    return None


__all__ = [
    "DEFAULT_KEY_METRIC",
    "GRAD_NORM",
    "MetricMode",
    "infer_key_metric",
    "LOSS_TERM_PREFIX",
    "is_loss",
    "loss_term_metric",
    "metric_mode",
    "metric_pairs",
    "name_tokens",
    "named_mode",
    "split_role",
]
