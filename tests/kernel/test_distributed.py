"""Two real ranks (gloo on CPU) train a DDP model under the kernel: both must apply the same
commands at the same steps, and only rank 0 writes the run directory."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kernel import Command, Kernel, KernelSettings, append_command, read_ledger

STEPS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = {"aux": 1.0}
    lrs = []
    settings = KernelSettings(sync_every=5, pause_poll_s=0.01)
    with Kernel(run_dir, optimizer=opt, loss_weights=weights, settings=settings) as kernel:
        for step in range(STEPS):
            loss = model(torch.randn(8, 4)).pow(2).mean() * weights["aux"]
            loss.backward()
            opt.step()
            opt.zero_grad()
            kernel.log(step, {"train/loss": loss.item()})
            if rank == 0 and step == 12:  # a command arriving mid-run, as from another process
                append_command(
                    run_dir, Command(id="mid", source="human", knob="lr", multiplier=0.5)
                )
            kernel.step(step)
            lrs.append((opt.param_groups[0]["lr"], weights["aux"]))
            if kernel.should_stop:
                break
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(lrs, f)
    del model  # DDP's reducer holds the process group: release it before the group goes
    dist.barrier()  # leave together: a rank exiting mid-teardown can abort gloo
    dist.destroy_process_group()
    # Skip the interpreter's teardown: under load, gloo's C++ threads were once destroyed
    # still joinable there ("terminate called without an active exception", SIGABRT) after
    # everything this test checks had been written.
    os._exit(0)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_all_ranks_apply_the_same_commands_at_the_same_steps(tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    append_command(run_dir, Command(id="early", source="human", knob="lr", value=0.05))
    append_command(
        run_dir, Command(id="later", source="human", knob="loss.aux", value=0.25, apply_at_step=21)
    )
    append_command(run_dir, Command(id="halt", source="human", op="stop", apply_at_step=33))
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir), str(out_dir)), nprocs=2, join=True)

    rank0 = json.loads((out_dir / "rank0.json").read_text())
    rank1 = json.loads((out_dir / "rank1.json").read_text())
    assert rank0 == rank1
    assert len(rank0) == 34  # stopped at step 33 on both ranks
    assert rank0[0] == [0.05, 1.0] and rank0[14] == [0.05, 1.0]
    assert rank0[15] == [0.025, 1.0]  # appended at step 12, shared at the next sync, 15
    assert rank0[21] == [0.025, 0.25]
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.step, r.decision) for r in rows] == [
        ("early", 0, "applied"),
        ("mid", 15, "applied"),
        ("later", 21, "applied"),
        ("halt", 33, "applied"),
    ]
    metric_steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert metric_steps == list(range(34))  # rank 0 only: no duplicated records
