"""Several processes append commands at once; the kernel reads only whole lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from kernel import parse_command_line, read_ledger

WRITERS, PER_WRITER = 3, 2000

WRITER = """
import os, sys, time
from kernel import Command, append_command
run_dir, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(os.path.join(run_dir, "ready-" + tag), "w").close()
while not os.path.exists(os.path.join(run_dir, "go")):
    time.sleep(0.001)
for i in range(n):
    append_command(run_dir, Command(id=f"{tag}-{i}", source="api", knob="lr", value=0.1,
                                    reason=tag * (i % 40)))
"""


def _start_writers(run_dir: Path, wait_for) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), f"w{n}", str(PER_WRITER)])
        for n in range(WRITERS)
    ]
    wait_for(lambda: len(list(run_dir.glob("ready-*"))) == WRITERS, what="writers ready")
    (run_dir / "go").touch()  # all of them start appending at once
    return procs


def test_concurrent_appenders_never_interleave_a_line(run_dir, make_kernel, wait_for):
    run_dir.mkdir()
    kernel = make_kernel(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
    procs = _start_writers(run_dir, wait_for)
    step = 0
    while any(p.poll() is None for p in procs):
        kernel.step(step)  # the training process reads while the writers write
        step += 1
    assert [p.returncode for p in procs] == [0] * WRITERS
    kernel.step(step)

    data = (run_dir / "commands.jsonl").read_bytes()
    assert data.endswith(b"\n")
    commands = [parse_command_line(line) for line in data.decode().split("\n")[:-1]]
    expected = {f"w{n}-{i}" for n in range(WRITERS) for i in range(PER_WRITER)}
    assert len(commands) == WRITERS * PER_WRITER
    assert {c.id for c in commands} == expected
    for c in commands:
        assert c.reason == c.id.split("-")[0] * (int(c.id.split("-")[1]) % 40)

    rows = read_ledger(run_dir)
    assert len(rows) == WRITERS * PER_WRITER
    assert {r.command_id for r in rows} == expected
    assert {r.decision for r in rows} == {"applied"}


def test_a_torn_last_line_waits_until_it_is_complete(run_dir, make_kernel):
    run_dir.mkdir()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    kernel = make_kernel(optimizer=opt)
    line = '{"id": "torn", "source": "human", "knob": "lr", "value": 0.025}\n'
    with (run_dir / "commands.jsonl").open("a") as f:
        f.write(line[:30])
    for step in range(3):
        kernel.step(step)
    assert read_ledger(run_dir) == []
    assert opt.param_groups[0]["lr"] == 0.1
    with (run_dir / "commands.jsonl").open("a") as f:
        f.write(line[30:])
    kernel.step(3)
    [row] = read_ledger(run_dir)
    assert (row.command_id, row.decision, row.step, row.offset) == ("torn", "applied", 3, 0)
    assert opt.param_groups[0]["lr"] == 0.025


def test_a_fragment_left_by_a_dead_writer_is_rejected_and_the_next_command_applies(
    run_dir, make_kernel, send
):
    run_dir.mkdir()
    kernel = make_kernel(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
    (run_dir / "commands.jsonl").write_text('{"id": "dead", "source": "hu')
    kernel.step(0)
    send(id="alive", knob="lr", value=0.02)
    kernel.step(1)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.decision) for r in rows] == [(None, "rejected"), ("alive", "applied")]
    assert "not valid JSON" in (rows[0].reason or "")
