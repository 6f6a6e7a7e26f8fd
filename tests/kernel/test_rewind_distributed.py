"""Two real ranks (gloo on CPU) rewind together: a ``rewind`` command read by rank 0 mid-run
restores, on every rank at the same step, the same snapshot, exactly; only rank 0 writes the
ledger row.

A reflex (``kernel.reflexes``) that trips on one rank only rewinds every rank the same way.

Each rank copies its live state right after every ``kernel.step`` and keeps every snapshot
its kernel lists, then dumps both; the test compares the ranks with each other and with the
snapshot. The ranks train on different batches, so their BatchNorm statistics (buffers, not
averaged by DDP) differ: each rank's must equal its own snapshot.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kernel import Command, Kernel, KernelSettings, append_command, read_ledger

STEPS = 32
APPEND_AT = 12  # rank 0 appends the rewind after its step 12; shared at the next sync, 15
SETTINGS = KernelSettings(
    sync_every=5, poll_interval_s=0.0, snapshot_every_steps=10, update_ratio_every_steps=0
)

pytestmark = pytest.mark.skipif(
    not dist.is_available(), reason="torch.distributed is not available"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logged(scenario: str, rank: int, step: int, loss: float) -> dict[str, float]:
    """What a rank logs at ``step``: its loss, but for the fault a scenario plants."""
    if scenario == "val_nan" and step == 10:  # one rank's validation shard overflows
        return {"train/loss": loss, "val/loss": math.nan if rank == 1 else 1.0}
    if scenario == "spike" and rank == 1 and step == 25:  # after the reflex's warmup (20)
        return {"train/loss": 1e6}
    return {"train/loss": loss}


def _state(opt: torch.optim.Optimizer, model: torch.nn.Module, sched: Any) -> dict[str, Any]:
    return {
        "parameters": [p.detach().clone() for g in opt.param_groups for p in g["params"]],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "optimizer": copy.deepcopy(opt.state_dict()),
        "scheduler": copy.deepcopy(sched.state_dict()),
    }


def _train(rank: int, run_dir: str, scenario: str) -> dict[str, Any]:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # two ranks share the cores
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    states: dict[int, Any] = {}
    snapshots: dict[int, Any] = {}
    kernel = Kernel(run_dir, optimizer=opt, scheduler=sched, model=net, settings=SETTINGS)
    with kernel:
        for step in range(STEPS):
            x = torch.randn(16, 4, generator=data)
            loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            kernel.log(step, _logged(scenario, rank, step, loss.item()))
            kernel.step(step)
            states[step] = _state(opt, net, sched)
            for snap in kernel.snapshots:
                snapshots.setdefault(snap.step, _snapshot(snap))
            if rank == 0 and step == APPEND_AT and scenario != "spike":
                append_command(run_dir, Command(id="rw", source="human", op="rewind"))
    del model  # DDP's reducer holds the process group: release it before the group goes
    return {"states": states, "snapshots": snapshots}


def _snapshot(snap: Any) -> dict[str, Any]:
    return {
        "parameters": snap.parameters,
        "buffers": snap.buffers,
        "optimizer": snap.optimizer,
        "scheduler": snap.schedulers[0],
    }


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str, scenario: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.save(_train(rank, run_dir, scenario), os.path.join(out_dir, f"rank{rank}.pt"))
    gc.collect()  # the kernel and the model it holds, before the group goes
    dist.barrier()  # leave together: a rank exiting mid-teardown can abort gloo
    dist.destroy_process_group()
    # Skip the interpreter's teardown (see test_distributed.py: gloo's threads once aborted it).
    os._exit(0)


def _run(tmp_path: Path, scenario: str) -> tuple[Path, list[dict[str, Any]]]:
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    args = (2, _free_port(), str(run_dir), str(out_dir), scenario)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return run_dir, ranks


def _tensors_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _same(state: dict[str, Any], snap: dict[str, Any]) -> bool:
    """Whether a live state equals a snapshot exactly, tensor by tensor."""
    if not _tensors_equal(state["parameters"], snap["parameters"]):
        return False
    if not _tensors_equal(state["buffers"], snap["buffers"]):
        return False
    live, saved = state["optimizer"], snap["optimizer"]
    if (
        live["param_groups"] != saved["param_groups"]
        or live["state"].keys() != saved["state"].keys()
    ):
        return False
    for i, entry in saved["state"].items():
        if live["state"][i].keys() != entry.keys():
            return False
        if not all(torch.equal(torch.as_tensor(live["state"][i][k]), v) for k, v in entry.items()):
            return False
    return bool(state["scheduler"] == snap["scheduler"])


def _assert_rewound_together(ranks: list[dict[str, Any]], *, at: int, to: int) -> None:
    zero, one = ranks
    for step in range(STEPS):  # the replicas never drift apart, through the rewind too
        same = _tensors_equal(zero["states"][step]["parameters"], one["states"][step]["parameters"])
        assert same, f"the ranks' parameters differ after step {step}"
    assert sorted(zero["snapshots"]) == sorted(one["snapshots"])
    for rank in ranks:
        snap = rank["snapshots"][to]
        assert _same(rank["states"][to], snap)  # the snapshot is the state of its step
        assert not _same(rank["states"][at - 1], snap)  # training had moved on from it
        assert _same(rank["states"][at], snap)  # right after the rewind: every tensor as then


def test_every_rank_rewinds_to_the_same_snapshot_at_the_same_step(tmp_path: Path) -> None:
    run_dir, ranks = _run(tmp_path, "command")
    _assert_rewound_together(ranks, at=15, to=10)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision, r.step, r.snapshot_step) for r in rows] == [
        ("rw", "applied", 15, 10)
    ]  # one row: rank 0's; the other rank writes nothing


def test_a_snapshot_skipped_on_one_rank_only_still_rewinds_the_ranks_together(
    tmp_path: Path,
) -> None:
    run_dir, ranks = _run(tmp_path, "val_nan")
    (row,) = read_ledger(run_dir)
    assert (row.command_id, row.decision, row.step) == ("rw", "applied", 15)
    assert row.snapshot_step is not None
    _assert_rewound_together(ranks, at=15, to=row.snapshot_step)  # 10 or 11, but on both


def test_a_loss_spike_on_one_rank_rewinds_every_rank_at_the_same_step(tmp_path: Path) -> None:
    run_dir, ranks = _run(tmp_path, "spike")  # rank 1 logs a loss of 1e6 at step 25
    # The readings of step 24 vouch for the updates up to 23: the snapshot of step 20.
    _assert_rewound_together(ranks, at=25, to=20)
    (row,) = read_ledger(run_dir)  # rank 0's row; rank 1, where it tripped, writes nothing
    assert (row.source, row.op, row.decision, row.step, row.snapshot_step) == (
        "kernel",
        "rewind",
        "applied",
        25,
        20,
    )
    assert row.restored == ["parameters", "buffers", "optimizer", "scheduler", "knobs", "rng"]
    assert row.reason is not None and "another rank" in row.reason
