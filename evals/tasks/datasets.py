"""The data of the training tasks: scikit-learn's bundled datasets, nothing downloaded.

Tabular tasks (digits, breast cancer, diabetes, a seeded synthetic one) become a ``Split`` of
tensors; the character-level language model reads the text of scikit-learn's own dataset
descriptions (``sklearn/datasets/descr/*.rst``, ~43 k characters of English and reST).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import torch
from torch import nn

TabularDataset = Literal["digits", "breast_cancer", "diabetes", "synthetic"]


@dataclass(frozen=True, kw_only=True)
class Split:
    """A task's tensors; ``y`` are class indices, or standardised targets for regression."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_out: int  # classes; 1 for regression

    @property
    def regression(self) -> bool:
        return self.n_out == 1

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error for regression, cross-entropy for classification."""
        if self.regression:
            return nn.functional.mse_loss(out.squeeze(1), y)
        return nn.functional.cross_entropy(out, y)

    @torch.no_grad()
    def evaluate(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """``val/loss`` (and ``val/acc`` for classification) of ``predict`` (a model) on
        the validation part."""
        out = predict(self.x_val)
        metrics = {"val/loss": self.loss(out, self.y_val).item()}
        if not self.regression:
            metrics["val/acc"] = (out.argmax(dim=1) == self.y_val).float().mean().item()
        return metrics


def load_split(task: TabularDataset, seed: int, n_train: int | None) -> Split:
    """The task's data, standardised on the train part, split by ``seed``.

    A quarter of the rows is held out for validation; ``n_train`` caps the train part.
    """
    from sklearn import datasets

    if task == "digits":
        x, y = datasets.load_digits(return_X_y=True)
    elif task == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
    elif task == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True)
    else:
        x, y = datasets.make_classification(
            n_samples=2000, n_features=20, n_informative=8, n_classes=4, random_state=seed
        )
    regression = task == "diabetes"
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = len(x) // 4
    val, train = perm[:n_val], perm[n_val:][:n_train]
    # digits are pixels: a tiny split leaves some constant, so they are scaled, not standardised
    x = x / 16.0 if task == "digits" else (x - x[train].mean(0)) / x[train].std(0)
    if regression:
        y = (y - y[train].mean()) / y[train].std()
    y_t = torch.tensor(y, dtype=torch.float32 if regression else torch.long)
    x_t = torch.tensor(x, dtype=torch.float32)
    n_out = 1 if regression else int(y.max()) + 1
    return Split(x_train=x_t[train], y_train=y_t[train], x_val=x_t[val], y_val=y_t[val],
                 n_out=n_out)  # fmt: skip


@functools.cache
def cached_split(task: TabularDataset, seed: int, n_train: int | None) -> Split:
    """``load_split``, loaded once per process (the benchmark trains each split many times;
    training never writes into the tensors)."""
    return load_split(task, seed, n_train)


@dataclass(frozen=True, kw_only=True)
class CharText:
    """A text as character indices, split by position into a training and a held-out part."""

    train: torch.Tensor  # int64 indices into ``vocab``
    val: torch.Tensor
    vocab: str


def windows(text: torch.Tensor, starts: torch.Tensor, context: int) -> torch.Tensor:
    """``[len(starts), context + 1]``: each row a context and the character after it."""
    return text[starts.unsqueeze(1) + torch.arange(context + 1)]


@functools.cache
def load_char_text(val_fraction: float = 0.1) -> CharText:
    """scikit-learn's dataset descriptions, concatenated in name order, as characters.

    The vocabulary is every character of the whole text, so the held-out part has no
    unknown characters; the split is by position, not random, so no window straddles it.
    """
    descr = resources.files("sklearn.datasets") / "descr"
    names = sorted(p.name for p in descr.iterdir() if p.name.endswith(".rst"))
    text = "\n".join((descr / name).read_text(encoding="utf-8") for name in names)
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * (1.0 - val_fraction))
    return CharText(train=ids[:cut], val=ids[cut:], vocab=vocab)
