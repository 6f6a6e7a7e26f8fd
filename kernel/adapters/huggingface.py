"""Hugging Face adapter: a ``TrainerCallback`` that runs the kernel inside ``Trainer.train``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kernel import Kernel, KernelSettings
from kernel.adapters._options import KernelOptions
from kernel.adapters.hf_names import SUMMARY_KEY, kernel_metric_name

logger = logging.getLogger(__name__)


def kernel_metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a ``Trainer`` log, renamed; the run summary gives none."""
    if SUMMARY_KEY in logs:
        return {}
    return {
        kernel_metric_name(k): float(v)
        for k, v in logs.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _unwrap(obj: Any, attr: str) -> Any:
    """The torch object inside an accelerate wrapper (``AcceleratedOptimizer.optimizer``)."""
    inner = getattr(obj, attr, None)
    return obj if inner is None or type(obj).__module__.split(".")[0] != "accelerate" else inner


class AutopilotTrainerCallback(TrainerCallback):
    """Connects a Hugging Face ``Trainer`` to the training kernel.

    At train begin it builds a :class:`kernel.Kernel` around the trainer's model, optimizer and LR
    scheduler (unwrapped from their accelerate wrappers), so that a ``rewind`` restores the
    weights, buffers, optimizer state, schedule and lr of a snapshot; the trainer's
    ``global_step`` goes on counting (the batches since the snapshot are not replayed). Each
    ``on_log`` is recorded with kernel names (``loss`` -> ``train/loss``, ``eval_loss`` ->
    ``val/loss``, ``learning_rate`` -> ``lr``, ``grad_norm`` -> ``grad/norm``, ``eval_<x>`` ->
    ``val/<x>``, others ``train/<x>``). The kernel publishes the trainer's ``state.max_steps``
    as the run's horizon. The kernel's safe point follows each optimizer step: in ``on_log``
    when the trainer logs that step (the step's loss reaches the kernel first, so a snapshot
    is only taken, and a reflex only judges, with it), else in ``on_step_end``. Commands are
    applied there, a ``stop`` command sets ``control.should_training_stop`` and, unless
    ``save_fn`` is given, a ``checkpoint`` command sets ``control.should_save`` (the trainer
    saves right after the step, into ``args.output_dir``). The Trainer logs a non-finite loss
    as the mean of the earlier ones (``args.logging_nan_inf_filter``, on by default), so the
    kernel sees such a step by its gradient norm (``grad/norm``), measured at every step while
    the kernel clips: its reflex rewinds after three non-finite norms in a row.

    Gradient clipping: the ``Trainer`` clips with ``args.max_grad_norm`` before it calls
    ``on_pre_optimizer_step``, where the kernel clips with its live ``grad_clip`` knob
    (gradients are already unscaled there). Two clippers would make the smaller bound win
    and hide any raise of the knob, so when ``grad_clip`` is None the knob starts from
    ``args.max_grad_norm`` and the adapter sets ``args.max_grad_norm = 0``, handing clipping
    to the kernel. Pass ``grad_clip`` explicitly to keep both (a warning says so). Under
    DeepSpeed the engine clips and the knob has no effect.

    Args:
        run_dir: The run directory shared with the autopilot.
        loss_weights: A dict the model or ``compute_loss`` reads its loss weights from; the
            kernel mutates it in place when a ``loss.<name>`` command is applied.
        key_metric: The metric the autopilot optimises.
        key_metric_mode: ``"min"`` or ``"max"``; None lets the kernel infer it.
        grad_clip: Initial max gradient norm; None adopts ``args.max_grad_norm`` (see above).
        bounds: ``{knob_name: (lo, hi)}`` overrides of the knob bounds.
        save_fn: Called with the step for a ``checkpoint`` command instead of asking the
            trainer to save.
        knobs: Extra user ``Knob`` objects.
        settings: The kernel's cadences (``kernel.KernelSettings``: polling, snapshots for
            ``rewind``, ...); None: the defaults.
        task: your name for the task, and ``dataset_size`` the number of training
            examples: what the autopilot's memory finds earlier runs of it by (``Kernel``).

    Example:
        ::

            from transformers import Trainer, TrainingArguments
            from kernel.adapters import AutopilotTrainerCallback

            args = TrainingArguments(output_dir="runs/r1/hf", max_steps=1000, report_to=[])
            callback = AutopilotTrainerCallback("runs/r1")
            trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback])
            trainer.train()  # model, ds: yours
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
        self.kernel: Kernel | None = None
        self._control: TrainerControl | None = None
        self._waiting: int | None = None
        """The step whose safe point waits for the trainer to log its loss."""
        self._args: TrainingArguments | None = None
        self._taken_max_grad_norm: float | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        self._close("crashed")  # a previous train() that never reached its end
        self._give_back_clipping()
        self._control = self._waiting = None
        self.kernel = self.options.build(
            optimizer=_unwrap(optimizer, "optimizer") if optimizer is not None else None,
            scheduler=_unwrap(lr_scheduler, "scheduler") if lr_scheduler is not None else None,
            model=model,
            grad_clip=self._initial_grad_clip(args),
            max_steps=int(state.max_steps),
            default_save_fn=self._request_save,
        )

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if self.kernel is None or model is None:
            return
        self.kernel.clip_grad_norm_(model.parameters())

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._late_safe_point(control)  # the log it waited for never came

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.kernel is None:
            return
        if control.should_log:
            # The trainer logs this step's loss right after on_step_end: the safe point waits
            # for it, so that a snapshot is only taken, and a reflex judges, with that loss.
            self._waiting = state.global_step
            return
        self._safe_point(state.global_step, control)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = kernel_metrics(logs or {})
        if self.kernel is not None and metrics:
            self.kernel.log(state.global_step, metrics)
        self._late_safe_point(control)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._late_safe_point(control)
        self._close()
        self._give_back_clipping()

    def _safe_point(self, step: int, control: TrainerControl) -> None:
        assert self.kernel is not None
        self._waiting, self._control = None, control
        self.kernel.step(step)
        if self.kernel.should_stop:
            control.should_training_stop = True

    def _late_safe_point(self, control: TrainerControl) -> None:
        """The safe point of the step that waited for its log, if one did."""
        if self.kernel is not None and self._waiting is not None:
            self._safe_point(self._waiting, control)

    def _initial_grad_clip(self, args: TrainingArguments) -> float | None:
        """The knob's start value; takes over the trainer's clipping unless told not to."""
        own = args.max_grad_norm
        if not own or own <= 0:
            return self.options.grad_clip
        if self.options.grad_clip is not None:
            logger.warning(
                "autopilot: the Trainer also clips at max_grad_norm=%s; the smaller wins", own
            )
            return self.options.grad_clip
        logger.info("autopilot: grad_clip knob takes over max_grad_norm=%s", own)
        self._args, self._taken_max_grad_norm = args, float(own)
        args.max_grad_norm = 0.0
        return float(own)

    def _give_back_clipping(self) -> None:
        """Restore ``args.max_grad_norm`` so that a later ``train()`` starts as configured."""
        if self._args is not None and self._taken_max_grad_norm is not None:
            self._args.max_grad_norm = self._taken_max_grad_norm
        self._args = self._taken_max_grad_norm = None

    def _request_save(self, step: int) -> None:
        """Default ``checkpoint`` op: the trainer saves right after this step."""
        if self._control is None:
            raise RuntimeError(f"checkpoint at step {step} needs a running Trainer step")
        self._control.should_save = True

    def _close(self, status: Literal["closed", "crashed"] = "closed") -> None:
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close(status)
