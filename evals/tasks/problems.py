"""What a setup trains: its model, how one training batch is scored, how it is evaluated.

One class per kind of data. Each draws its batches from the generator it is handed, so a run
is a function of its seed alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn

from evals.tasks.datasets import cached_split, load_char_text, windows
from evals.tasks.models import AuxMLP, CharMLP, mlp
from evals.tasks.spec import Setup

Metrics = dict[str, float | torch.Tensor]


class Problem(Protocol):
    """A model with its training loss and its validation metrics."""

    model: nn.Module

    def train_loss(
        self, gen: torch.Generator, weights: Mapping[str, float]
    ) -> tuple[torch.Tensor, Metrics]:
        """The loss of one fresh batch (to backpropagate) and the metrics to log for it."""
        ...

    def evaluate(self) -> dict[str, float]:
        """``val/loss`` (the key metric) and whatever else the validation part tells."""
        ...


def build_problem(setup: Setup, seed: int) -> Problem:
    """The problem of ``setup``; its model is initialised from torch's global seed."""
    if setup.dataset == "sklearn_descr":
        return CharProblem(setup)
    if setup.aux_head:
        return AuxProblem(setup, seed)
    return TabularProblem(setup, seed)


class TabularProblem:
    """An MLP on a tabular split: cross-entropy for classes, MSE for regression."""

    def __init__(self, setup: Setup, seed: int) -> None:
        assert setup.dataset != "sklearn_descr"
        self.split = cached_split(setup.dataset, seed, setup.n_train)
        self.model = self._make_model(setup)
        self.batch = min(setup.batch_size, len(self.split.x_train))

    def _make_model(self, setup: Setup) -> nn.Module:
        n_in = self.split.x_train.shape[1]
        return mlp(n_in, setup.hidden, setup.depth, self.split.n_out)

    def _batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.split.x_train), (self.batch,), generator=gen)
        return self.split.x_train[idx], self.split.y_train[idx]

    def train_loss(
        self, gen: torch.Generator, weights: Mapping[str, float]
    ) -> tuple[torch.Tensor, Metrics]:
        x, y = self._batch(gen)
        loss = self.split.loss(self.model(x), y)
        return loss, {"train/loss": loss.detach()}

    def evaluate(self) -> dict[str, float]:
        return self.split.evaluate(self.model)


class AuxProblem(TabularProblem):
    """Classification plus ``weights["aux"]`` times the MSE of reconstructing the input.

    The key metric is the validation cross-entropy alone: the reconstruction is there to
    shape the shared features, and too much weight on it starves the classifier.
    """

    def _make_model(self, setup: Setup) -> nn.Module:
        n_in = self.split.x_train.shape[1]
        return AuxMLP(n_in, setup.hidden, setup.depth, self.split.n_out)

    def train_loss(
        self, gen: torch.Generator, weights: Mapping[str, float]
    ) -> tuple[torch.Tensor, Metrics]:
        x, y = self._batch(gen)
        logits, recon = self.model(x)
        ce = self.split.loss(logits, y)
        aux = nn.functional.mse_loss(recon, x)
        loss = ce + weights["aux"] * aux
        return loss, {
            "train/loss": loss.detach(),
            "train/loss/ce": ce.detach(),  # the loss-term convention: train/loss/<term>,
            "train/loss/aux": aux.detach(),  # unweighted, <term> a key of loss_weights
        }

    def evaluate(self) -> dict[str, float]:
        return self.split.evaluate(lambda x: self.model(x)[0])


class CharProblem:
    """Next-character prediction; ``val/loss`` is the cross-entropy per character (nats)
    over every window of the held-out text."""

    def __init__(self, setup: Setup) -> None:
        self.text = load_char_text()
        self.context, self.batch = setup.context, setup.batch_size
        vocab = len(self.text.vocab)
        self.model: nn.Module = CharMLP(vocab, setup.context, setup.embed, setup.hidden)
        starts = torch.arange(len(self.text.val) - setup.context)
        self.val_windows = windows(self.text.val, starts, setup.context)

    def _loss(self, rows: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(rows[:, :-1]), rows[:, -1])

    def train_loss(
        self, gen: torch.Generator, weights: Mapping[str, float]
    ) -> tuple[torch.Tensor, Metrics]:
        n = len(self.text.train) - self.context
        starts = torch.randint(n, (self.batch,), generator=gen)
        loss = self._loss(windows(self.text.train, starts, self.context))
        return loss, {"train/loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {"val/loss": self._loss(self.val_windows).item()}
