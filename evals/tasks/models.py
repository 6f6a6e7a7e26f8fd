"""The tasks' models: small enough that a whole run takes about a second on one CPU thread."""

from __future__ import annotations

import torch
from torch import nn


def mlp(n_in: int, hidden: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` ReLU layers of width ``hidden``, then a linear output layer."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class AuxMLP(nn.Module):
    """A shared ReLU trunk with two heads: class logits and a reconstruction of the input.

    Both losses train the trunk, so the weight of the reconstruction term decides what the
    shared features are for.
    """

    def __init__(self, n_in: int, hidden: int, depth: int, n_classes: int) -> None:
        super().__init__()
        self.trunk = mlp(n_in, hidden, depth - 1, hidden) if depth > 1 else nn.Linear(n_in, hidden)
        self.classify = nn.Linear(hidden, n_classes)
        self.reconstruct = nn.Linear(hidden, n_in)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.trunk(x))
        return self.classify(h), self.reconstruct(h)


class CharMLP(nn.Module):
    """Next-character model after Bengio et al. (2003): embeddings of a fixed context,
    concatenated, one tanh layer, logits over the vocabulary.

    Tanh, not ReLU: a learning rate far too high saturates tanh units, which a lower rate
    later brings back, where it would kill half of the ReLU units for good (measured: a rate
    10x too high for 100 steps leaves ~50 % of ReLU units dead), and nothing could rescue it.
    """

    def __init__(self, vocab: int, context: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.body = nn.Sequential(
            nn.Linear(context * embed, hidden), nn.Tanh(), nn.Linear(hidden, vocab)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of the next character after each row of ``ids`` (``[batch, context]``)."""
        return self.body(self.embed(ids).flatten(1))
