"""What both framework adapters pass through to the ``Kernel`` they build at train start."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kernel import Kernel, KernelSettings


@dataclass(frozen=True, kw_only=True)
class KernelOptions:
    """The user's kernel settings, held by an adapter until the framework has an optimizer."""

    run_dir: Path
    loss_weights: dict[str, float | bool] | None = None
    key_metric: str | None = "val/loss"
    key_metric_mode: Literal["min", "max"] | None = None
    grad_clip: float | None = None
    bounds: Mapping[str, tuple[float, float]] | None = None
    save_fn: Callable[[int], Any] | None = None
    knobs: tuple[Any, ...] = ()
    settings: KernelSettings | None = None
    task: str | None = None
    dataset_size: int | None = None

    def build(
        self,
        *,
        optimizer: Any,
        scheduler: Any,
        model: Any,
        grad_clip: float | None,
        max_steps: int | None,
        default_save_fn: Callable[[int], Any],
    ) -> Kernel:
        """A kernel around the framework's model, optimizer and schedulers (all of which a
        ``rewind`` restores), told the trainer's planned ``max_steps`` (None, or a count
        below 1: unknown)."""
        return Kernel(
            self.run_dir,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_weights=self.loss_weights,
            key_metric=self.key_metric,
            key_metric_mode=self.key_metric_mode,
            max_steps=max_steps if max_steps is not None and max_steps >= 1 else None,
            grad_clip=grad_clip,
            knobs=self.knobs,
            save_fn=self.save_fn or default_save_fn,
            bounds=self.bounds,
            settings=self.settings,
            model=model,
            task=self.task,
            dataset_size=self.dataset_size,
        )
