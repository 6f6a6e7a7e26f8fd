"""The kernel's names for Hugging Face ``Trainer`` log keys, without importing transformers.

One home for the renaming, shared by the live ``AutopilotTrainerCallback`` and the offline
``trainer_state.json`` importer (``evals.importers``), so a replayed log has the names a
live run under the callback records.

Example:
    >>> [kernel_metric_name(k) for k in ("loss", "eval_accuracy", "learning_rate", "foo")]
    ['train/loss', 'val/accuracy', 'lr', 'train/foo']
"""

from __future__ import annotations

RENAMES = {
    "loss": "train/loss",
    "eval_loss": "val/loss",
    "learning_rate": "lr",
    "grad_norm": "grad/norm",
}
SUMMARY_KEY = "train_runtime"
"""Marks the end-of-training summary ``Trainer.train`` logs; its ``train_loss`` is a run
average, not a point on the curve."""


def kernel_metric_name(name: str) -> str:
    """Map a ``Trainer`` log key to the kernel's naming (``"eval_acc"`` -> ``"val/acc"``)."""
    if name in RENAMES:
        return RENAMES[name]
    if "/" in name:
        return name
    if name.startswith("eval_"):
        return "val/" + name[len("eval_") :]
    if name.startswith("train_"):
        return "train/" + name[len("train_") :]
    return "train/" + name
