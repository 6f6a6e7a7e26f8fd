"""The update-to-weight ratio: how far one optimizer step moves the weights, relative to them.

``||w_(t+1) - w_t|| / ||w_t||`` over every trainable parameter, measured over one step every
``every`` steps: the weights are copied at the end of one safe point and compared at the start
of the next (before any command moves them). Around 1e-3 is typical of a healthy run; 1e-5
means the learning rate does almost nothing, 1e-1 that it tears the weights apart. The kernel
records it as ``train/update_ratio`` with the next ``log``; the detectors and the LLM read it
like any other metric.

Example:
    >>> w = torch.nn.Parameter(torch.ones(4))
    >>> ratio = UpdateRatio([w], every=1)
    >>> ratio.after_step(0)  # copies the weights
    >>> with torch.no_grad():
    ...     _ = w.mul_(1.01)
    >>> round(float(ratio.before_step(1)), 6)
    0.01
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

METRIC = "train/update_ratio"


def _sample(parameters: list[torch.Tensor], budget: int) -> list[torch.Tensor]:
    """Views of ``parameters`` holding at most ``budget`` elements in all, in order.

    Example:
        >>> views = _sample([torch.zeros(3, 4), torch.zeros(100)], budget=20)
        >>> [tuple(v.shape) for v in views]
        [(12,), (8,)]
    """
    views, left = [], budget
    for p in parameters:
        if left <= 0:
            break
        flat = p.detach().reshape(-1) if p.is_contiguous() else None
        if flat is None:  # a view of a strided tensor's elements would copy it
            if p.numel() > left:
                continue
            flat = p.detach()
        views.append(flat if flat.numel() <= left else flat[:left])
        left -= views[-1].numel()
    return views


def _total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all of ``tensors`` together, in one fused pass per device."""
    norms = torch._foreach_norm(list(tensors))
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))


class UpdateRatio:
    """Measures the ratio over one step every ``every`` steps (0: never), once early (at
    ``EARLY_STEP``, so a run learning too slowly shows it soon) and a few steps after each
    change of an optimizer knob (``soon``: the ratio the new lr gives)."""

    EARLY_STEP = 20
    AFTER_CHANGE = 3
    MAX_ELEMENTS = 1 << 24
    """At most this many weights (16.7M: 64 MB in float32) are copied and compared: on a
    large model the ratio is measured on the first tensors (and, past the budget, the first
    elements of a tensor), an estimate that costs no model-sized copy on its device."""

    def __init__(self, parameters: Sequence[torch.Tensor], *, every: int) -> None:
        self._parameters = _sample(list(parameters), self.MAX_ELEMENTS)
        self._every = every
        self._previous: list[torch.Tensor] | None = None
        self._extra: set[int] = {self.EARLY_STEP} if every > self.EARLY_STEP else set()
        self._soon: int | None = None

    def soon(self) -> None:
        """Measure again a few safe points from now (a knob that scales the step changed)."""
        if self._every > 0:
            self._soon = self.AFTER_CHANGE

    def before_step(self, step: int) -> torch.Tensor | None:
        """The ratio of the update since the copy the last safe point took, if it took one
        (a 0-d tensor on the parameters' device: no host sync here)."""
        previous, self._previous = self._previous, None
        if previous is None:
            return None
        with torch.no_grad():
            now = [p.detach() for p in self._parameters]
            moved = _total_norm(torch._foreach_sub(now, previous))
            size = _total_norm(previous)
            return moved / size.clamp_min(torch.finfo(size.dtype).tiny)

    def after_step(self, step: int) -> None:
        """Copy the weights when the next step is one to measure."""
        if self._every <= 0 or not self._parameters:
            return
        due = step % self._every == 0 or step in self._extra
        if self._soon is not None:
            self._soon -= 1
            if self._soon <= 0:
                due, self._soon = True, None
        if due:
            self._previous = [p.detach().clone() for p in self._parameters]
