"""``autopilot rewind``: queues a rewind command, which the kernel applies at its next step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autopilot.cli import main
from kernel import Kernel, KernelSettings, read_ledger


@pytest.fixture
def kernel(tmp_path: Path):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    settings = KernelSettings(poll_interval_s=0.0, snapshot_every_steps=2)
    k = Kernel(tmp_path / "run", optimizer=opt, key_metric="val/loss", settings=settings)
    yield k
    k.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _queued(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "commands.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("argv", "fields", "shown"),
    [
        ((), {"to": "last"}, "rewind to last"),
        (("--to-best",), {"to": "best"}, "rewind to best"),
        (("--to-step", 40), {"to": "step", "to_step": 40}, "rewind to step 40"),
        (("--back", 2), {"to": "last", "back": 2}, "rewind back 2 snapshots"),
    ],
)
def test_rewind_queues_a_command(
    kernel: Kernel, capsys, argv: tuple[object, ...], fields: dict, shown: str
) -> None:
    code, out, _ = _run(capsys, "--dir", kernel.run_dir, "rewind", *argv, "--reason", "spike")
    assert code == 0 and shown in out and "queued human-" in out
    (cmd,) = _queued(kernel.run_dir)
    assert cmd["op"] == "rewind" and cmd["intent"] == "rewind" and cmd["reason"] == "spike"
    assert {k: cmd.get(k) for k in fields} == fields


def test_the_kernel_applies_the_queued_rewind(kernel: Kernel, capsys) -> None:
    for step in range(5):
        kernel.step(step)  # snapshots at 0, 2, 4
    assert _run(capsys, "--dir", kernel.run_dir, "rewind", "--back", 2)[0] == 0
    kernel.step(5)
    (row,) = read_ledger(kernel.run_dir)
    assert (row.decision, row.op, row.step, row.snapshot_step) == ("applied", "rewind", 5, 2)


def test_rewind_options_exclude_each_other(kernel: Kernel, capsys) -> None:
    code, _, err = _run(capsys, "--dir", kernel.run_dir, "rewind", "--to-best", "--back", 2)
    assert code == 2 and "not allowed with" in err


def test_rewind_on_an_ended_run_is_refused(kernel: Kernel, capsys) -> None:
    kernel.close()
    code, _, err = _run(capsys, "--dir", kernel.run_dir, "rewind")
    assert code == 2 and "has ended" in err and "nothing to rewind" in err
    assert not (kernel.run_dir / "commands.jsonl").exists()
