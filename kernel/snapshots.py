"""Snapshots: a small ring of last-good training states that ``rewind`` restores exactly.

A snapshot holds CPU copies of the trainable parameters reachable from the optimizer's param
groups (and from the model, when the kernel was given one), the model's buffers (BatchNorm
statistics), the optimizer's ``state_dict``, each attached scheduler's ``state_dict``, the
knobs the optimizer does not hold (gradient clipping, loss weights, custom knobs) and the RNG
states (torch CPU and CUDA, ``random``, numpy when it is importable).

Restoring writes every tensor back in place (``copy_``), so references the training loop
holds (a parameter, an optimizer's param group, a moment buffer) stay valid, and the result
is bit-exact. The loop's step counter is not part of a snapshot: after a rewind the loop goes
on with its next step and its next batch.
"""

from __future__ import annotations

import copy
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from kernel.commands import KnobValue
from kernel.knobs import Knob, OptimizerKnob
from kernel.state import SnapshotInfo, SnapshotKind


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One captured training state (CPU copies); see ``TrainingState.capture``."""

    step: int
    wall_time: float
    kind: SnapshotKind
    metric: float | None
    parameters: list[torch.Tensor]
    buffers: list[torch.Tensor]
    optimizer: dict[str, Any] | None
    schedulers: list[dict[str, Any]]
    knobs: dict[str, Any]
    """``knob.snapshot()`` of each knob the optimizer does not hold."""
    knob_values: dict[str, KnobValue]
    """Every knob's value at the snapshot (the optimizer's too)."""
    rng: dict[str, Any] = field(default_factory=dict)

    def info(self, *, best: bool = False) -> SnapshotInfo:
        return SnapshotInfo(
            step=self.step, wall_time=self.wall_time, kind=self.kind, metric=self.metric, best=best
        )


class TrainingState:
    """The parts of a run a snapshot covers, and how to capture and restore them.

    Args:
        optimizer: its param groups name the trainable parameters; its state is captured.
        schedulers: LR schedulers whose ``state_dict`` is captured.
        model: adds its buffers, and trainable parameters the optimizer does not hold.
        knobs: the kernel's knobs.
    """

    def __init__(
        self,
        *,
        optimizer: Any = None,
        schedulers: Sequence[Any] = (),
        model: torch.nn.Module | None = None,
        knobs: Mapping[str, Knob],
    ) -> None:
        self.optimizer, self.schedulers, self.knobs = optimizer, list(schedulers), knobs
        self.parameters = _unique(_parameters(optimizer, model))
        self.buffers = [] if model is None else _unique(model.buffers())

    def nbytes(self) -> int:
        """What one snapshot takes in memory: the parameters, the buffers and the tensors of
        the optimizer's state (the rest is small)."""
        size = sum(t.numel() * t.element_size() for t in (*self.parameters, *self.buffers))
        if self.optimizer is not None:
            for entry in self.optimizer.state.values():
                for value in entry.values():
                    if isinstance(value, torch.Tensor):
                        size += value.numel() * value.element_size()
        return size

    @property
    def empty(self) -> bool:
        """Whether there is nothing but knobs to capture (no optimizer, no model)."""
        return not self.parameters and not self.buffers and self.optimizer is None

    def capture(
        self, step: int, kind: SnapshotKind = "cadence", metric: float | None = None
    ) -> Snapshot:
        """CPU copies of the whole state now."""
        return Snapshot(
            step=step,
            wall_time=time.time(),
            kind=kind,
            metric=metric,
            parameters=[_cpu(p) for p in self.parameters],
            buffers=[_cpu(b) for b in self.buffers],
            optimizer=None if self.optimizer is None else _to_cpu(self.optimizer.state_dict()),
            schedulers=[_to_cpu(s.state_dict()) for s in self.schedulers],
            knobs={n: copy.deepcopy(k.snapshot()) for n, k in self._own_knobs()},
            knob_values=self.knob_values(),
            rng=_rng_state(),
        )

    def check(self, snapshot: Snapshot) -> str | None:
        """Why ``snapshot`` cannot be restored into this state, or None when it can."""
        for kind, live, saved in (
            ("parameter", self.parameters, snapshot.parameters),
            ("buffer", self.buffers, snapshot.buffers),
        ):
            if len(live) != len(saved):
                return f"the snapshot holds {len(saved)} {kind}s, the run has {len(live)} now"
            for i, (a, b) in enumerate(zip(live, saved, strict=True)):
                if a.shape != b.shape:
                    return f"{kind} {i} is {tuple(a.shape)} now, {tuple(b.shape)} in the snapshot"
        return None

    def restore(self, snapshot: Snapshot) -> list[str]:
        """Put the state of ``snapshot`` back, exactly; return the parts restored.

        The snapshot stays intact (nothing of it is aliased into the live state), so it can
        be restored again. Call it between two steps (after ``optimizer.step``).
        """
        with torch.no_grad():
            for live, saved in zip(self.parameters, snapshot.parameters, strict=True):
                live.copy_(saved)
            for live, saved in zip(self.buffers, snapshot.buffers, strict=True):
                live.copy_(saved)
        if self.optimizer is not None and snapshot.optimizer is not None:
            _restore_optimizer(self.optimizer, snapshot.optimizer)
        for sched, sched_state in zip(self.schedulers, snapshot.schedulers, strict=True):
            sched.load_state_dict(copy.deepcopy(sched_state))
        for name, knob in self._own_knobs():
            if name in snapshot.knobs:
                knob.restore(copy.deepcopy(snapshot.knobs[name]))
        _set_rng_state(snapshot.rng)
        return self.parts(snapshot)

    def parts(self, snapshot: Snapshot) -> list[str]:
        """What restoring ``snapshot`` puts back, as the ledger names it."""
        parts = ["parameters"] if self.parameters else []
        parts += ["buffers"] if self.buffers else []
        parts += ["optimizer"] if self.optimizer is not None and snapshot.optimizer else []
        parts += ["scheduler"] if self.schedulers else []
        return [*parts, "knobs", "rng"]

    def knob_values(self) -> dict[str, KnobValue]:
        values = {}
        for name, knob in self.knobs.items():
            try:
                values[name] = copy.deepcopy(knob.get())
            except Exception:  # a custom getter; such a knob is left out of the record
                continue
        return values

    def _own_knobs(self) -> Iterable[tuple[str, Knob]]:
        """The knobs whose state the optimizer and scheduler state dicts do not hold."""
        return ((n, k) for n, k in self.knobs.items() if not isinstance(k, OptimizerKnob))


class SnapshotRing:
    """The kept snapshots: the latest ``keep`` taken on the cadence, plus the best one.

    Example:
        >>> ring = SnapshotRing(keep=2, mode="min")
        >>> state = TrainingState(knobs={})
        >>> for step, loss in ((0, 3.0), (100, 1.0), (200, 2.0), (300, 2.5)):
        ...     ring.add(state.capture(step, metric=loss))
        >>> [s.step for s in ring.all()], ring.best().step
        ([100, 200, 300], 100)
    """

    def __init__(self, *, keep: int, mode: Literal["min", "max"] | None) -> None:
        self._ring: deque[Snapshot] = deque(maxlen=keep)
        self.mode = mode
        self._best: Snapshot | None = None

    def __len__(self) -> int:
        return len(self.all())

    @property
    def keep(self) -> int:
        return self._ring.maxlen or 0

    def resize(self, keep: int) -> None:
        """Keep at most ``keep`` cadence snapshots from now on (the newest stay)."""
        self._ring = deque(self._ring, maxlen=max(keep, 1))

    def add(self, snapshot: Snapshot) -> None:
        if snapshot.kind == "cadence":
            self._ring.append(snapshot)
        if self.beats_best(snapshot.metric):
            self._best = snapshot  # kept beyond the ring

    def beats_best(self, metric: float | None) -> bool:
        """Whether a snapshot with ``metric`` would be better than the best one kept."""
        if metric is None or self.mode is None:
            return False
        best = None if self._best is None else self._best.metric
        if best is None:
            return True
        return metric < best if self.mode == "min" else metric > best

    def drop_after(self, step: int) -> None:
        """Forget the snapshots taken after ``step`` (a rewind to ``step`` abandoned them)."""
        kept = [s for s in self._ring if s.step <= step]
        self._ring.clear()
        self._ring.extend(kept)
        if self._best is not None and self._best.step > step:
            self._best = None
            for kept_one in kept:
                if self.beats_best(kept_one.metric):
                    self._best = kept_one

    def all(self) -> list[Snapshot]:
        """Every kept snapshot, oldest first."""
        kept = list(self._ring)
        if self._best is not None and all(s is not self._best for s in kept):
            kept.append(self._best)
        return sorted(kept, key=lambda s: (s.step, s.wall_time))

    def best(self) -> Snapshot | None:
        return self._best

    def last(self, back: int = 1) -> Snapshot | None:
        """The ``back``-th newest snapshot (1: the newest)."""
        kept = self.all()
        return kept[-back] if 1 <= back <= len(kept) else None

    def at_or_before(self, step: int) -> Snapshot | None:
        """The newest snapshot taken at ``step`` or earlier."""
        return next((s for s in reversed(self.all()) if s.step <= step), None)

    def listing(self) -> list[SnapshotInfo]:
        return [s.info(best=s is self._best) for s in self.all()]


def trainable_parameters(optimizer: Any, model: torch.nn.Module | None) -> list[torch.Tensor]:
    """The parameters the optimizer's groups reach, and the model's trainable ones, once each."""
    return _unique(_parameters(optimizer, model))


def _parameters(optimizer: Any, model: torch.nn.Module | None) -> Iterable[torch.Tensor]:
    if optimizer is not None:
        for group in optimizer.param_groups:
            yield from group["params"]
    if model is not None:
        yield from (p for p in model.parameters() if p.requires_grad)


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    kept = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            kept.append(t)
    return kept


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


def _to_cpu(value: Any) -> Any:
    """A deep copy of a state dict with every tensor copied to the CPU (dtypes kept)."""
    if isinstance(value, torch.Tensor):
        return _cpu(value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value  # immutable: nothing to copy (deepcopy of each costs ~1 us)
    return copy.deepcopy(value)


def _restore_optimizer(optimizer: Any, saved: dict[str, Any]) -> None:
    """``load_state_dict`` done in place: the param group dicts and state tensors the loop
    (and the knobs) hold stay the live ones."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        for key, value in saved_group.items():
            if key != "params":
                _put(group, key, value, "cpu")
    for i, param in enumerate(params):
        entry = saved["state"].get(i)
        if entry is None:
            optimizer.state.pop(param, None)
            continue
        live = optimizer.state[param]
        for key in [k for k in live if k not in entry]:
            del live[key]
        for key, value in entry.items():
            # a scalar ("step") stays where torch keeps it, on the CPU; moments go with the param
            device = "cpu" if isinstance(value, torch.Tensor) and value.dim() == 0 else param.device
            _put(live, key, value, device)


def _put(container: Any, key: Any, value: Any, device: Any) -> None:
    current = container.get(key)
    if isinstance(value, torch.Tensor):
        if (
            isinstance(current, torch.Tensor)
            and current.shape == value.shape
            and current.dtype == value.dtype
        ):
            current.copy_(value)
        else:
            where = current.device if isinstance(current, torch.Tensor) else device
            container[key] = value.to(where, copy=True)
    elif isinstance(current, torch.Tensor) and isinstance(value, (int, float)):
        current.fill_(value)  # a tensor-valued hyperparameter (capturable optimizers)
    else:
        container[key] = copy.deepcopy(value)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy
    except ImportError:
        return state
    state["numpy"] = numpy.random.get_state()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
