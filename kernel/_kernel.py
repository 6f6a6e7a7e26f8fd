"""The ``Kernel``: the autopilot's foothold inside a user's training process.

The training loop calls ``log`` and ``step`` once per step, and ``clip_grad_norm_`` if it
clips. ``step`` is the safe point where commands are applied. With nothing new to read it
costs a clock read and, at most every ``poll_interval_s``, one ``stat``: no file is read
unless ``commands.jsonl`` grew. Metrics are buffered and written in batches.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import torch

from kernel._executor import MAX_PENDING, CommandExecutor
from kernel._overrides import LiveChanges
from kernel._publish import StatePublisher
from kernel._replay import RecipePlayer
from kernel._rewind import Rewinder
from kernel.commands import COMMANDS_FILE, KnobValue
from kernel.distributed import RankSync
from kernel.errors import KernelError
from kernel.jsonl import JsonlTail
from kernel.knobs import GradClipKnob, Knob, LossWeightKnob, OptimizerKnob, optimizer_knobs
from kernel.knobs.simple import loss_weight_knob
from kernel.ledger import Ledger
from kernel.lifecycle import plan_start
from kernel.metric_names import GRAD_NORM, metric_mode
from kernel.metrics import MetricsWriter
from kernel.reflexes import Reflex, ReflexSettings, Trip
from kernel.snapshots import Snapshot, TrainingState, trainable_parameters
from kernel.state import PendingCommand, Status, TaskInfo
from kernel.update_ratio import METRIC as UPDATE_RATIO
from kernel.update_ratio import UpdateRatio

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KernelSettings:
    """Cadences of the kernel. The defaults suit steps from ~100 us to minutes."""

    poll_interval_s: float = 0.02
    """Minimum time between two looks (one ``stat``) at ``commands.jsonl``; 0: every step.
    A system call between steps costs the next forward pass more than itself (TLB and
    cache), so fast loops look at most 50 times a second; slow ones at every step."""
    flush_interval_s: float = 0.25
    """How often buffered metrics are appended to ``metrics.jsonl``."""
    heartbeat_interval_s: float = 1.0
    """How often ``kernel.json`` is rewritten when nothing else changed (a daemon thread
    keeps it beating during steps longer than this)."""
    pause_poll_s: float = 0.05
    """How often a paused run looks for ``resume`` or ``stop``."""
    grad_norm_interval_s: float = 1.0
    """With clipping off, ``clip_grad_norm_`` still measures the gradient norm (a divergence
    signal) at most this often; a negative value turns that off. With clipping on, the norm
    is measured, and recorded, at every call."""
    distributed: bool = True
    """Under an initialised ``torch.distributed`` group, keep all ranks in step (see below)."""
    sync_every: int = 10
    """In a distributed job, rank 0 shares new commands every N steps (a collective call)."""
    max_pending: int = MAX_PENDING
    """How many commands may wait for a later ``apply_at_step``; past it one is rejected."""
    attach_interval_s: float = 5.0
    """How often a kernel whose run directory cannot be written tries again (see ``Kernel``)."""
    metrics_every: int = 1
    """Record the metrics of every N-th step (see ``MetricsWriter``); records with a
    non-finite value or an evaluation metric (``val/...``, ``eval_...``) are always kept."""
    metrics_max_per_s: float = 0.0
    """At most this many metric records a second (0: no cap); the same records are kept."""
    metrics_rotate_bytes: int = 0
    """Rotate ``metrics.jsonl`` before it would pass this many bytes (0: never): it becomes
    ``metrics.1.jsonl``, older ones shift up, and a new file starts (``kernel.rotation``)."""
    metrics_keep: int = 5
    """How many rotated metrics files are kept (``metrics.1.jsonl`` is the newest)."""
    snapshot_every_steps: int = 100
    """Keep a snapshot of the training state (``kernel.snapshots``) at the first step and then
    every N steps, for ``rewind``; 0 turns snapshots off. Each one is a CPU copy of the
    parameters, buffers and optimizer state (about 3x the model's size with Adam)."""
    snapshot_keep: int = 3
    """How many snapshots taken on the cadence are kept (the best one is kept besides)."""
    snapshot_on_best: bool = True
    """Also take a snapshot when the logged key metric beats the best snapshot's (not in a
    distributed job, whose ranks log different values)."""
    snapshot_best_every_steps: int = 10
    """At most one best snapshot per this many steps (a train/loss key metric improves at
    almost every step)."""
    reflex_action: Literal["rewind", "record", "off"] = "rewind"
    """What the kernel does by itself when a training loss turns non-finite or spikes
    (``kernel.reflexes``): ``rewind`` to the newest snapshot the readings vouch for, at the
    same step's safe point, and record it in the ledger; ``record`` only writes the ledger
    row (decision ``noted``); ``off``. A frozen run only records. In a distributed job the
    ranks agree at every step (one small ``all_reduce``) before acting."""
    reflex_loss_factor: float = 10.0
    """A training loss trips when above this many times its running median and above the
    untrained model's loss (the median of its first ``reflex_warmup`` readings)."""
    reflex_grad_factor: float = 100.0
    """A gradient norm trips when above this many times its running median (0: only a
    non-finite norm, three readings in a row, trips)."""
    reflex_warmup: int = 20
    """Readings of a series before a spike can trip on it."""
    reflex_max_rewinds: int = 3
    """At most this many reflex rewinds within ``reflex_window_steps``; past it the reflex
    only records (once), and the autopilot decides."""
    reflex_window_steps: int = 1000
    snapshot_memory_mb: float = 4096.0
    """The most CPU memory the kept snapshots may take (0: no cap). Sized at the first step
    the optimizer has its state: fewer snapshots are kept when they do not all fit, none
    (with a warning, and ``kernel.json``'s ``snapshots_off``) when two do not."""
    update_ratio_every_steps: int = 200
    """Measure the update-to-weight ratio (``kernel.update_ratio``: ``||dw|| / ||w||`` over
    one step) every N steps and record it as ``train/update_ratio``; 0 turns it off. Each
    measurement copies the parameters once."""

    def __post_init__(self) -> None:
        for name in (
            "snapshot_every_steps",
            "snapshot_best_every_steps",
            "update_ratio_every_steps",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.reflex_action not in ("rewind", "record", "off"):
            raise ValueError(
                f"reflex_action must be 'rewind', 'record' or 'off', got {self.reflex_action!r}"
            )
        if self.reflex_max_rewinds < 0 or self.reflex_window_steps < 1:
            raise ValueError(
                "reflex_max_rewinds must be >= 0 and reflex_window_steps >= 1, got "
                f"{self.reflex_max_rewinds} and {self.reflex_window_steps}"
            )
        self.reflex_settings()  # checks the thresholds
        if self.snapshot_keep < 1:
            raise ValueError(f"snapshot_keep must be >= 1, got {self.snapshot_keep}")
        if not self.snapshot_memory_mb >= 0:
            raise ValueError(
                f"snapshot_memory_mb must be >= 0 (0: no cap), got {self.snapshot_memory_mb}"
            )

    def reflex_settings(self) -> ReflexSettings:
        return ReflexSettings(
            loss_factor=self.reflex_loss_factor,
            grad_factor=self.reflex_grad_factor,
            warmup=self.reflex_warmup,
            window=max(64, self.reflex_warmup),
        )


class Kernel:
    """Live, bounded, recorded changes to a running PyTorch training job.

    Example:
        >>> import torch, tempfile
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with Kernel(tempfile.mkdtemp(), optimizer=opt, key_metric="train/loss") as k:
        ...     for step in range(3):
        ...         loss = model(torch.randn(8, 4)).pow(2).mean()
        ...         loss.backward()
        ...         norm = k.clip_grad_norm_(model.parameters())  # a tensor, or None
        ...         opt.step(); opt.zero_grad()
        ...         k.log(step, {"train/loss": loss.item()})
        ...         k.step(step)
        ...         if k.should_stop:
        ...             break
        >>> k.knobs["lr"].get()
        0.1

    Args:
        run_dir: the run directory shared with the autopilot (created if missing).
        optimizer: its ``lr``, ``weight_decay``, ``momentum`` and ``betas`` become knobs.
        scheduler: LR scheduler(s) kept consistent with live ``lr`` changes.
        loss_weights: the user's dict of loss weights (floats) and term toggles (bools); the
            kernel changes it in place, so read it at every step.
        key_metric: the metric the autopilot judges the run by, e.g. ``"val/loss"``.
        key_metric_mode: ``"min"`` or ``"max"``; inferred from the name when omitted.
        max_steps: the run's planned length in steps, published in ``kernel.json`` so that
            the autopilot can judge progress against the run's horizon (None: unknown).
        grad_clip: initial max gradient norm for ``clip_grad_norm_`` (None or 0: off).
        knobs: extra user knobs (see ``kernel.knobs.Knob`` and ``FnKnob``).
        save_fn: called with the step on a ``checkpoint`` command.
        model: the model; its buffers (BatchNorm statistics) join the snapshots that
            ``rewind`` restores (the optimizer's parameters are in them without it).
        bounds: ``{knob name: (lo, hi)}`` overriding default hard bounds.
        settings: cadences; see ``KernelSettings``.
        task: your name for what this script trains (e.g. ``"cifar10-resnet18"``). The
            autopilot's memory finds earlier runs of the same task by it, with the model and
            optimizer classes, the parameter count, ``dataset_size`` and ``max_steps``.
        dataset_size: the number of training examples, if you want it in the task's
            fingerprint.

    Distributed training: create a ``Kernel`` on every rank after
    ``torch.distributed.init_process_group``. Rank 0 reads commands and writes the run
    directory; every ``sync_every`` steps it broadcasts what it read, and all ranks apply the
    same commands at the same step. ``step`` must then be called by every rank with the same
    step numbers. ``save_fn`` runs on every rank (check the rank inside it if only one should
    write).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        optimizer: Any = None,
        scheduler: Any = None,
        loss_weights: MutableMapping[str, Any] | None = None,
        key_metric: str | None = None,
        key_metric_mode: Literal["min", "max"] | None = None,
        max_steps: int | None = None,
        grad_clip: float | None = None,
        knobs: Iterable[Knob] = (),
        save_fn: Callable[[int], Any] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        settings: KernelSettings | None = None,
        model: torch.nn.Module | None = None,
        task: str | None = None,
        dataset_size: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.max_steps = _checked_max_steps(max_steps)
        self.settings = settings or KernelSettings()
        distributed = self.settings.distributed
        self._sync = RankSync.detect(self.settings.sync_every) if distributed else None
        self._writes = self._sync is None or self._sync.is_leader
        self._detached: str | None = None
        """Why the run directory cannot be written, while it cannot (None: attached)."""
        self._warned_detached = False
        self._next_attach = 0.0
        self.key_metric = key_metric
        inferred = metric_mode(key_metric) if key_metric else None
        self.key_metric_mode = key_metric_mode or inferred
        self._knobs: dict[str, Knob] = {}
        self._discover(optimizer, scheduler, loss_weights, grad_clip, bounds or {})
        for knob in knobs:
            self.register(knob)
        self._rewinder = self._snapshots(optimizer, scheduler, model)
        self.task = task_info(task, model, optimizer, dataset_size)
        self._update_ratio = UpdateRatio(
            trainable_parameters(optimizer, model), every=self.settings.update_ratio_every_steps
        )
        ledger = self._open_ledger()
        self._live = LiveChanges(self._knobs, ledger)
        self._reflex = Reflex(self.settings.reflex_settings())
        self._trip: Trip | None = None
        self._reflex_rewinds: list[int] = []
        self._reflex_quiet_until: int | None = None
        self._executor = CommandExecutor(
            self._knobs,
            ledger,
            save_fn,
            self._on_applied,
            max_pending=self.settings.max_pending,
            retry_interval_s=self.settings.poll_interval_s,
            rewinder=self._rewinder,
        )
        self._commands = JsonlTail(self.run_dir / COMMANDS_FILE, keep_blank=True)
        self._metrics = MetricsWriter(
            self.run_dir,
            every=self.settings.metrics_every,
            max_per_s=self.settings.metrics_max_per_s,
            rotate_bytes=self.settings.metrics_rotate_bytes,
            keep=self.settings.metrics_keep,
        )
        self._rewinder.on_restore = self._metrics.mark_rewind  # windows restart after it
        if self._sync is not None:
            self._rewinder.agree = self._sync.all_true  # every rank keeps the same snapshots
        self.segment = 0
        """The run segment: 0 for the first run in ``run_dir``, +1 for each later one."""
        self._extra: dict[str, Any] = {}
        self._next_norm = 0.0
        self._last_step: int | None = None
        self._last_step_at: float | None = None
        self._player = RecipePlayer(self.run_dir, self._executor)
        self._publisher = StatePublisher(
            self.run_dir, self._knobs, self.settings.heartbeat_interval_s, _weak_progress(self)
        )
        weakref.finalize(self, self._publisher.stop)  # a kernel never closed stops beating
        self._next_poll = self._next_flush = 0.0
        self._closed = False
        if self._writes and self._detached is None:
            self._attach()
        if self._sync is not None:
            self._share_initial_state()

    # -- setup -----------------------------------------------------------------------------
    def _discover(
        self,
        optimizer: Any,
        scheduler: Any,
        loss_weights: MutableMapping[str, Any] | None,
        grad_clip: float | None,
        bounds: Mapping[str, tuple[float, float]],
    ) -> None:
        schedulers: Sequence[Any] = []
        if isinstance(scheduler, (list, tuple)):
            schedulers = list(scheduler)
        elif scheduler is not None:
            schedulers = [scheduler]
        if optimizer is not None:
            for knob in optimizer_knobs(optimizer, schedulers, bounds):
                self.register(knob)
        self._grad_clip = GradClipKnob(grad_clip, **_bounds_kw(bounds.get("grad_clip")))
        self.register(self._grad_clip)
        for key in loss_weights or {}:
            name = loss_weight_knob(key)
            self.register(LossWeightKnob(loss_weights, key, **_bounds_kw(bounds.get(name))))  # type: ignore[arg-type]

    def _snapshots(self, optimizer: Any, scheduler: Any, model: Any) -> Rewinder:
        settings = self.settings
        schedulers = scheduler if isinstance(scheduler, (list, tuple)) else [scheduler]
        state = TrainingState(
            optimizer=optimizer,
            schedulers=[s for s in schedulers if s is not None],
            model=model,
            knobs=self._knobs,
        )
        on_best = settings.snapshot_on_best and self._sync is None
        return Rewinder(
            state,
            every=settings.snapshot_every_steps,
            keep=settings.snapshot_keep,
            best_every=settings.snapshot_best_every_steps if on_best else 0,
            key_metric=self.key_metric,
            mode=self.key_metric_mode,
            memory_bytes=int(settings.snapshot_memory_mb * 2**20),
        )

    def register(self, knob: Knob) -> None:
        """Add a custom knob. Names are unique within a run."""
        if knob.name in self._knobs:
            raise KernelError(f"a knob named '{knob.name}' already exists; pick another name")
        self._knobs[knob.name] = knob

    def _open_ledger(self) -> Ledger:
        if self._writes:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                return Ledger(self.run_dir)
            except OSError as exc:
                self._detach(exc)
        return Ledger(None)

    def _attach(self) -> None:
        """Take up the run directory: continue the run found there, publish ``kernel.json``.

        A run directory that cannot be written (read-only, on a full disk, under a file)
        must not stop training: the kernel runs detached instead, with one warning. It
        reads no commands and writes nothing, keeps metrics in memory (bounded), and tries
        again every ``attach_interval_s``.
        """
        self._next_attach = time.monotonic() + self.settings.attach_interval_s
        was = self._detached
        try:
            if was is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._executor.ledger = self._live.ledger = Ledger(self.run_dir)
            self._restore_previous_state()
            self._player.refresh()
            self._detached = None
            self._write_state()
        except OSError as exc:
            self._detach(exc)
            return
        if was is not None:
            logger.warning("the run directory %s can be written again: attached", self.run_dir)

    def _detach(self, exc: OSError) -> None:
        self._detached = str(exc.strerror or exc)
        if self._warned_detached:
            return
        self._warned_detached = True
        logger.warning(
            "the run directory %s cannot be written (%s). Training goes on, but the kernel "
            "runs detached: it reads no commands and writes no kernel.json, so the autopilot "
            "can neither see nor steer this run; metrics are kept in memory (bounded). It "
            "tries again every %s s: make the directory writable to attach.",
            self.run_dir,
            self._detached,
            self.settings.attach_interval_s,
        )

    def _restore_previous_state(self) -> None:
        start = plan_start(self.run_dir, self._executor.ledger)
        self._commands.offset = start.cursor
        self.segment = start.segment
        if start.new_segment:
            self._metrics.set_segment(start.segment)
            self._metrics.start_segment()

    def _share_initial_state(self) -> None:
        assert self._sync is not None
        executor = self._executor
        state = None
        if self._sync.is_leader:
            state = {
                "ledger": executor.ledger.memory(),
                "freeze": self._player.payload(),
                "pending": [p.model_dump(mode="json") for p in executor.pending],
            }
        state = self._sync.broadcast(state)
        if not self._sync.is_leader:
            executor.ledger.adopt(state["ledger"])
            self.segment = executor.ledger.segment
            executor.pending = [PendingCommand.model_validate(p) for p in state["pending"]]
            self._player.install(**state["freeze"])

    # -- the training loop's calls ---------------------------------------------------------
    def clip_grad_norm_(
        self, parameters: Iterable[torch.Tensor] | torch.Tensor
    ) -> torch.Tensor | None:
        """Clip gradients to the live ``grad_clip`` knob, if it is on; return the total norm.

        The norm is recorded as ``grad/norm`` with the next ``log`` call: at every call while
        clipping is on, at most every ``grad_norm_interval_s`` while it is off.
        """
        try:
            max_norm = self._grad_clip.value
            if max_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
            else:
                now = time.monotonic()
                interval = self.settings.grad_norm_interval_s
                if interval < 0 or now < self._next_norm:
                    return None
                self._next_norm = now + interval
                norm = _total_norm(parameters)
            self._extra[GRAD_NORM] = norm.detach()
            return norm
        except Exception:
            logger.exception("clip_grad_norm_ failed; training continues unclipped")
            return None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record metrics for ``step``. Values may be floats or 0-d tensors.

        In a distributed job only rank 0's metrics are written.
        """
        try:
            if self._extra:
                metrics = {**metrics, **self._extra}
                self._extra = {}
            self._rewinder.observe(step, metrics)  # every rank: each keeps its snapshots
            if self.settings.reflex_action != "off":
                trip = self._reflex.watch(step, metrics)
                if trip is not None and self._trip is None:
                    self._trip = trip
        except Exception:
            logger.exception("could not watch the metrics of step %s", step)
        if not self._writes:
            return
        try:
            self._metrics.add(step, time.time(), metrics)
        except Exception:
            logger.exception("could not record metrics at step %s", step)

    def step(self, step: int) -> None:
        """The safe point: apply pending commands; block here while the run is paused."""
        try:
            self._last_step = step
            self._last_step_at = now = time.monotonic()
            self._measure_update(step, before=True)
            if self._sync is not None and self.settings.reflex_action != "off":
                self._agree_reflex(step)
            if self._trip is not None:
                self._act_on_trip(step)
            if self._detached is not None and now >= self._next_attach:
                self._attach()
            if self._sync is not None:
                if self._sync.due(step):
                    self._sync_commands(step)
            elif now >= self._next_poll and self._detached is None:
                self._next_poll = now + self.settings.poll_interval_s
                if self._commands.changed():
                    self._read_commands(step)
            executor = self._executor
            if executor.has_due(step):
                executor.apply_due(step)
                self._write_state()
            if self._player.next_step <= step:
                self._player.play(step)
                self._write_state()
            self._take_snapshot(step)
            self._measure_update(step, before=False)
            if now >= self._next_flush and self._writes:
                self._flush(now)
            if executor.paused:
                self._wait_while_paused(step)
        except Exception:
            logger.exception("kernel.step(%s) failed; training continues", step)

    def schedule(self, knob: str, value: float | list[float]) -> KnobValue:
        """Set ``knob`` from a hand-written schedule, keeping live changes.

        Call it where the loop would assign the value itself (``group["lr"] = get_lr(it)``).
        The kernel applies ``value`` times the knob's live factor: 1 until a command changes
        the knob, then the change relative to the scheduled value (``lr x0.5`` halves every
        later scheduled value). The result is clamped to the knob's bounds and returned.
        Assigning the value directly instead overrides a live change: the kernel records
        that as ``overridden`` in the ledger.

        Example:
            >>> import torch, tempfile
            >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
            >>> with Kernel(tempfile.mkdtemp(), optimizer=opt) as k:
            ...     for it in range(3):
            ...         lr = k.schedule("lr", 0.1 * (it + 1) / 3)  # a warmup
            ...         k.step(it)
            >>> round(opt.param_groups[0]["lr"], 6)
            0.1

        Raises:
            KernelError: for a knob this run does not have.
            KnobError: for an on/off knob or a value that is not a number.
        """
        return self._live.schedule(knob, value)

    @property
    def should_stop(self) -> bool:
        """True once a ``stop`` command was applied: end the training loop."""
        return self._executor.stopping

    @property
    def paused(self) -> bool:
        return self._executor.paused

    @property
    def knobs(self) -> Mapping[str, Knob]:
        return MappingProxyType(self._knobs)

    @property
    def last_step(self) -> int | None:
        return self._last_step

    @property
    def snapshots(self) -> list[Snapshot]:
        """The kept snapshots, oldest first (see ``KernelSettings.snapshot_every_steps``)."""
        return self._rewinder.ring.all()

    def restore(self, snapshot: Snapshot) -> list[str]:
        """Restore ``snapshot`` now, exactly, without a command or a ledger row (a ``rewind``
        command records one); return the parts restored. Call it between two steps."""
        return self._rewinder.restore(snapshot, self._last_step)

    def close(self, status: Status = "closed") -> None:
        """Flush metrics and mark the run closed in ``kernel.json``. Safe to call twice."""
        if self._closed or not self._writes:
            self._closed = True
            return
        self._closed = True
        if self._detached is not None:
            self._attach()  # a last try, so that what was kept is written
        for action in (self._metrics.flush, lambda: self._write_state(status)):
            try:
                action()
            except Exception:
                logger.exception("kernel.close: part of closing failed")
        self._publisher.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close("crashed" if exc_type is not None else "closed")

    # -- internals -------------------------------------------------------------------------
    def _read_commands(self, step: int) -> None:
        self._player.refresh()
        for offset, text in self._commands.read_new():
            self._executor.accept(offset, text, step)
        self._write_state()

    def _sync_commands(self, step: int) -> None:
        """Rank 0 reads; every rank applies the same lines at the same step."""
        assert self._sync is not None
        payload = None
        if self._sync.is_leader:
            freeze = self._player.payload() if self._player.refresh() else None
            readable = self._detached is None and self._commands.changed()
            lines = self._commands.read_new() if readable else []
            payload = {"freeze": freeze, "lines": lines}
        payload = self._sync.broadcast(payload)
        if not self._sync.is_leader and payload["freeze"] is not None:
            self._player.install(**payload["freeze"])
        for offset, text in payload["lines"]:
            self._executor.accept(offset, text, step)
        if payload["lines"]:
            self._write_state()

    def _wait_while_paused(self, step: int) -> None:
        self._write_state()
        while self._executor.paused and not self._executor.stopping:
            if self._sync is not None:
                if self._sync.is_leader:
                    time.sleep(self.settings.pause_poll_s)
                self._sync_commands(step)  # every rank leaves the loop at the same time
            else:
                time.sleep(self.settings.pause_poll_s)
                if self._commands.changed():
                    self._read_commands(step)
            if self._writes:
                self._flush(time.monotonic())
        self._write_state()

    def _measure_update(self, step: int, *, before: bool) -> None:
        """The update ratio: compared at the start of a safe point, copied at its end."""
        try:
            if not before:
                self._update_ratio.after_step(step)
            elif (ratio := self._update_ratio.before_step(step)) is not None:
                self._extra[UPDATE_RATIO] = ratio
        except Exception:  # a parameter that changed shape under us; the step goes on
            logger.exception("no update ratio at step %s; training continues", step)

    def _on_applied(self, knob: Knob, command_id: str | None) -> None:
        self._live.note(knob, command_id)
        if isinstance(knob, OptimizerKnob):
            self._update_ratio.soon()  # the ratio the new value gives
        if isinstance(knob, LossWeightKnob):
            self._reflex.rebase()  # the loss's scale moved on purpose

    def _agree_reflex(self, step: int) -> None:
        """Distributed: act on a trip only together, on every rank at the same step."""
        assert self._sync is not None
        trip = self._trip
        local = None if trip is None else trip.vouched_step
        tripped, vouched = self._sync.agree_trip(trip is not None, local)
        if not tripped:
            self._trip = None
        elif trip is None:
            self._trip = Trip(
                step=step,
                metric="(another rank)",
                cause="spike",
                elsewhere=True,
                vouched_step=vouched,
            )
        else:
            self._trip = trip.model_copy(update={"vouched_step": vouched})

    def _act_on_trip(self, step: int) -> None:
        """Rewind at this safe point (``KernelSettings.reflex_action``), within the budget
        of rewinds; past it, record once and leave the run to the autopilot."""
        trip, self._trip = self._trip, None
        assert trip is not None
        settings = self.settings
        recent = [s for s in self._reflex_rewinds if step - s < settings.reflex_window_steps]
        self._reflex_rewinds = recent
        action: str = settings.reflex_action
        if len(recent) >= settings.reflex_max_rewinds:
            if self._reflex_quiet_until is not None and step < self._reflex_quiet_until:
                return
            self._reflex_quiet_until = recent[0] + settings.reflex_window_steps
            action = "record"
            logger.warning(
                "the reflex tripped again at step %s (%s) after %d rewinds within %d steps; "
                "it only records now and leaves the run to the autopilot",
                step,
                trip.describe(),
                len(recent),
                settings.reflex_window_steps,
            )
        rewound = self._executor.reflex(step, trip, trip.vouched_step, action)
        if rewound:
            self._reflex_rewinds.append(step)
            logger.warning(
                "reflex: %s; rewound to the snapshot of step %s",
                trip.describe(),
                self._rewinder.rewound_to,
            )
        self._write_state()

    def _take_snapshot(self, step: int) -> None:
        try:
            off = self._rewinder.off_reason
            if self._rewinder.at_safe_point(step) or self._rewinder.off_reason != off:
                self._publisher.mark_due()  # kernel.json lists the snapshots a rewind can name
        except Exception:  # e.g. a custom knob whose snapshot fails; the step goes on
            logger.exception("no snapshot at step %s; training continues", step)

    def _flush(self, now: float) -> None:
        self._next_flush = now + self.settings.flush_interval_s
        if self._detached is not None:
            self._metrics.hold()
            return
        self._metrics.flush()
        self._live.check(self._last_step)
        if self._publisher.due(now):
            if self._sync is None:  # distributed: freeze changes travel with the commands
                self._player.refresh()
            self._write_state()

    def _write_state(self, status: Status | None = None) -> None:
        if not self._writes or self._detached is not None:
            return
        executor = self._executor
        if status is None:
            status = "stopping" if executor.stopping else "paused" if executor.paused else "running"
        self._publisher.publish(
            status=status,
            segment=self.segment,
            metrics_start=self._metrics.segment_start,
            cursor=self._commands.offset,
            **executor.pending_summary(),
            key_metric=self.key_metric,
            key_metric_mode=self.key_metric_mode,
            max_steps=self.max_steps,
            freeze=executor.freeze,
            snapshots=self._rewinder.listing(),
            snapshots_off=self._rewinder.off_reason,
            task=self.task,
        )

    def _progress(self) -> dict[str, Any]:
        """The last step and its wall time (steps are timed with the cheap monotonic clock)."""
        at = self._last_step_at
        when = None if at is None else time.time() - (time.monotonic() - at)
        return {"last_step": self._last_step, "last_step_time": when}


def _weak_progress(kernel: Kernel) -> Callable[[], dict[str, Any]]:
    """``kernel._progress`` for the heartbeat thread, which must not keep a forgotten kernel
    alive."""
    ref = weakref.ref(kernel)

    def progress() -> dict[str, Any]:
        alive = ref()
        return {} if alive is None else alive._progress()

    return progress


def _checked_max_steps(max_steps: Any) -> int | None:
    if max_steps is None:
        return None
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1 (None: unknown), got {max_steps!r}")
    return max_steps


def _bounds_kw(bounds: tuple[float, float] | None) -> dict[str, float]:
    return {} if bounds is None else {"lo": bounds[0], "hi": bounds[1]}


def _total_norm(parameters: Iterable[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    params = [parameters] if isinstance(parameters, torch.Tensor) else parameters
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.nn.utils.get_total_norm(grads)


def task_info(task: str | None, model: Any, optimizer: Any, dataset_size: int | None) -> TaskInfo:
    """What ``kernel.json`` says is trained: the classes, the trainable parameter count and
    the user's own name and dataset size (``TaskInfo``)."""
    n_params = sum(p.numel() for p in trainable_parameters(optimizer, model)) or None
    return TaskInfo(
        task=task,
        model=None if model is None else type(model).__name__,
        optimizer=None if optimizer is None else type(optimizer).__name__,
        n_params=n_params,
        dataset_size=dataset_size,
    )
