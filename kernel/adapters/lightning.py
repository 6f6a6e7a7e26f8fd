"""Lightning adapter: a ``Callback`` that runs the kernel inside ``Trainer.fit``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from kernel import Kernel, KernelSettings
from kernel.adapters._options import KernelOptions

logger = logging.getLogger(__name__)

# Lightning-style prefixes ("val_loss") and the kernel's namespaces ("val/loss").
_PREFIXES = {
    "train_": "train/",
    "val_": "val/",
    "valid_": "val/",
    "validation_": "val/",
    "test_": "test/",
}


def kernel_metric_name(name: str, renames: Mapping[str, str] | None = None) -> str:
    """Map a Lightning metric name to the kernel's naming (``"val_loss"`` -> ``"val/loss"``).

    Explicit ``renames`` win; names that already contain ``"/"`` are kept as they are.
    """
    if renames and name in renames:
        return renames[name]
    if "/" in name:
        return name
    for prefix, namespace in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return namespace + name[len(prefix) :]
    return name


def _scalar(value: Any) -> float | torch.Tensor | None:
    """A number or a one-element tensor, else None.

    Tensors stay tensors: the kernel reads them when it flushes, so a GPU is not
    synchronised on every step.
    """
    if isinstance(value, torch.Tensor):
        return value.detach() if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _batch_loss(outputs: Any) -> float | torch.Tensor | None:
    """The loss of a ``training_step`` output: a tensor, or a mapping with ``"loss"``."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return _scalar(outputs)


def _planned_steps(trainer: pl.Trainer) -> int | None:
    """The optimizer steps ``fit`` will take, or None when Lightning cannot tell (an
    iterable dataset without a length and no ``max_steps``, or no limit at all)."""
    try:
        planned = trainer.estimated_stepping_batches
    except Exception:  # e.g. accumulation that changes between epochs
        logger.info("autopilot: the run's length is unknown", exc_info=True)
        return None
    return int(planned) if math.isfinite(planned) and planned >= 1 else None


class AutopilotCallback(pl.Callback):
    """Connects a Lightning ``Trainer`` to the training kernel.

    At fit start it builds a :class:`kernel.Kernel` around the LightningModule, the first optimizer
    and the schedulers attached to it, so that a ``rewind`` restores the weights, buffers,
    optimizer state, schedules and lr of a snapshot (``trainer.global_step`` goes on counting:
    the batches since the snapshot are not replayed). After each optimizer step it logs the
    batch loss as ``train/loss`` together with the training metrics in
    ``trainer.callback_metrics``, then gives the kernel its safe point (commands are applied
    there; a ``stop`` command sets ``trainer.should_stop``). Validation metrics are logged once
    per validation run. Lightning names are mapped to the kernel's (``val_loss`` ->
    ``val/loss``). The kernel publishes the run's horizon: ``trainer.max_steps``, or
    ``max_epochs`` times the optimizer steps in an epoch when that is known (Lightning's
    ``estimated_stepping_batches``).

    Gradient clipping: the kernel clips in ``on_before_optimizer_step`` (after AMP unscaling)
    with its live ``grad_clip`` knob. When ``grad_clip`` is None and the trainer was given a
    norm-based ``gradient_clip_val``, the knob starts from that value and Lightning's own
    clipping is switched off, so that one clipper is in charge.

    Args:
        run_dir: The run directory shared with the autopilot.
        loss_weights: A dict the LightningModule reads its loss weights from; the kernel
            mutates it in place when a ``loss.<name>`` command is applied.
        key_metric: The metric the autopilot optimises.
        key_metric_mode: ``"min"`` or ``"max"``; None lets the kernel infer it.
        grad_clip: Initial max gradient norm; None or 0 leaves clipping off (still a knob).
        bounds: ``{knob_name: (lo, hi)}`` overrides of the knob bounds.
        save_fn: Called with the step for a ``checkpoint`` command; by default the trainer
            saves ``run_dir/checkpoints/step{step}.ckpt``.
        metric_names: Explicit ``{lightning_name: kernel_name}`` renames.
        knobs: Extra user ``Knob`` objects.
        settings: The kernel's cadences (``kernel.KernelSettings``: polling, snapshots for
            ``rewind``, ...); None: the defaults.
        task: your name for the task, and ``dataset_size`` the number of training
            examples: what the autopilot's memory finds earlier runs of it by (``Kernel``).

    Example:
        ::

            import lightning.pytorch as pl
            from kernel.adapters import AutopilotCallback

            weights = {"aux": 0.5}  # the module computes loss + weights["aux"] * aux_loss
            callback = AutopilotCallback("runs/r1", loss_weights=weights, grad_clip=1.0)
            trainer = pl.Trainer(max_steps=1000, callbacks=[callback])
            trainer.fit(model, train_loader, val_loader)  # model, loaders: yours
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        loss_weights: dict[str, float | bool] | None = None,
        key_metric: str | None = "val/loss",
        key_metric_mode: Literal["min", "max"] | None = None,
        grad_clip: float | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        save_fn: Callable[[int], Any] | None = None,
        metric_names: Mapping[str, str] | None = None,
        knobs: Iterable[Any] = (),
        settings: KernelSettings | None = None,
        task: str | None = None,
        dataset_size: int | None = None,
    ) -> None:
        self.options = KernelOptions(
            run_dir=Path(run_dir),
            loss_weights=loss_weights,
            key_metric=key_metric,
            key_metric_mode=key_metric_mode,
            grad_clip=grad_clip,
            bounds=bounds,
            save_fn=save_fn,
            knobs=tuple(knobs),
            settings=settings,
            task=task,
            dataset_size=dataset_size,
        )
        self.metric_names = dict(metric_names or {})
        self.kernel: Kernel | None = None
        self._last_step: int | None = None
        self._taken_clip: tuple[pl.Trainer, float] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        optimizer = self._optimizer(trainer)
        self.kernel = self.options.build(
            optimizer=optimizer,
            scheduler=self._schedulers(trainer, optimizer),
            model=pl_module,
            grad_clip=self._initial_grad_clip(trainer),
            max_steps=_planned_steps(trainer),
            default_save_fn=self._default_save_fn(trainer),
        )
        self._last_step = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close("crashed")

    # -- training ------------------------------------------------------------------

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.kernel is None or not pl_module.automatic_optimization:
            return
        self.kernel.clip_grad_norm_(pl_module.parameters())

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        # Under gradient accumulation several batches share one optimizer step.
        if self.kernel is None or step == self._last_step:
            return
        self._last_step = step
        metrics = self._collect(trainer, validation=False)
        loss = _batch_loss(outputs)
        if loss is not None:
            metrics["train/loss"] = loss
        self.kernel.log(step, metrics)
        self.kernel.step(step)
        if self.kernel.should_stop:
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.kernel is None or trainer.sanity_checking:
            return
        metrics = self._collect(trainer, validation=True)
        if metrics:
            self.kernel.log(trainer.global_step, metrics)

    # -- helpers -------------------------------------------------------------------

    def _collect(self, trainer: pl.Trainer, *, validation: bool) -> dict[str, Any]:
        """Scalar callback metrics, renamed; validation ones xor the others."""
        metrics: dict[str, Any] = {}
        for name, value in trainer.callback_metrics.items():
            ours = kernel_metric_name(name, self.metric_names)
            number = _scalar(value)
            if number is not None and ours.startswith("val/") == validation:
                metrics[ours] = number
        return metrics

    def _optimizer(self, trainer: pl.Trainer) -> torch.optim.Optimizer | None:
        optimizers = trainer.optimizers
        if len(optimizers) > 1:
            logger.warning("autopilot: %d optimizers; only the first is steered", len(optimizers))
        return optimizers[0] if optimizers else None

    def _schedulers(self, trainer: pl.Trainer, optimizer: Any) -> list[Any]:
        configs = trainer.lr_scheduler_configs
        return [
            c.scheduler for c in configs if getattr(c.scheduler, "optimizer", None) is optimizer
        ]

    def _initial_grad_clip(self, trainer: pl.Trainer) -> float | None:
        """The knob's start value; takes over Lightning's norm clipping when asked to."""
        own = trainer.gradient_clip_val
        by_norm = trainer.gradient_clip_algorithm in (None, "norm")  # None means norm
        if not own or not by_norm:
            return self.options.grad_clip
        if self.options.grad_clip is not None:
            logger.warning(
                "autopilot: Lightning also clips at gradient_clip_val=%s; the smaller bound wins",
                own,
            )
            return self.options.grad_clip
        logger.info("autopilot: grad_clip knob takes over gradient_clip_val=%s", own)
        self._taken_clip = (trainer, float(own))
        trainer.gradient_clip_val = None
        return float(own)

    def _default_save_fn(self, trainer: pl.Trainer) -> Callable[[int], None]:
        directory = self.options.run_dir / "checkpoints"

        def save(step: int) -> None:
            trainer.save_checkpoint(directory / f"step{step}.ckpt")

        return save

    def _close(self, status: Literal["closed", "crashed"] = "closed") -> None:
        """Close the kernel and give clipping back to the trainer (for a later ``fit``)."""
        if self._taken_clip is not None:
            trainer, value = self._taken_clip
            trainer.gradient_clip_val, self._taken_clip = value, None
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close(status)
