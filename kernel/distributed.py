"""Keeping every rank of a ``torch.distributed`` job on the same commands.

Under data parallelism every rank holds a copy of the optimizer, so every rank must apply
the same change at the same step or the replicas drift apart. Rank 0 alone reads the run
directory (commands, freeze mode) and writes it (ledger, metrics, ``kernel.json``). Every
``sync_every`` steps it broadcasts what it read; all ranks then run the same deterministic
executor on the same input at the same step.

``kernel.step`` becomes a collective call at those steps: every rank must call it with the
same step numbers, as a DDP training loop does.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


class RankSync:
    """Broadcasts rank 0's view of the run directory to the other ranks."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"sync_every must be at least 1, got {every}")
        self.every = every
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    @classmethod
    def detect(cls, every: int) -> RankSync | None:
        """A ``RankSync`` when a process group with several ranks is initialised, else None."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        return cls(every) if dist.get_world_size() > 1 else None

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one ``all_reduce``; all ranks call it)."""
        import torch

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        box = torch.tensor([int(flag)], dtype=torch.int64, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        return bool(int(box[0]))

    def agree_trip(self, tripped: bool, vouched: int | None) -> tuple[bool, int | None]:
        """Whether any rank's reflex tripped, and the oldest step all the trips vouch for
        (one ``all_reduce`` of two integers; every rank must call it at the same step)."""
        import torch

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        far = 2**62
        box = torch.tensor(
            [-int(tripped), far if vouched is None or not tripped else vouched],
            dtype=torch.int64,
            device=device,
        )
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        any_trip, step = int(box[0]) < 0, int(box[1])
        return any_trip, None if step == far else step

    def broadcast(self, payload: Any) -> Any:
        """Rank 0's ``payload``, on every rank (the others pass anything, e.g. None)."""
        box = [payload if self.is_leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
