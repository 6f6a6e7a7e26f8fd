"""A run directory the kernel cannot write never stops training: the kernel starts detached
with one warning, and attaches (kernel.json, metrics, commands) once it can write.

What really fails here: tests run as root, where ``chmod`` does not stop writes. A run
directory under a regular file cannot be created by anyone; an immutable directory
(``chattr +i``) refuses root too. Where neither ``chmod`` nor ``chattr`` makes a directory
unwritable for this user, that test is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST

from kernel import Kernel, read_kernel_state, read_ledger
from kernel.metrics import METRICS_FILE, MetricRecord

RETRY_AT_ONCE = dataclasses.replace(FAST, attach_interval_s=0.0)


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)


def _train(kernel: Kernel, steps: range) -> None:
    for step in steps:
        kernel.log(step, {"train/loss": 1.0 / (step + 1)})
        kernel.step(step)


def _detach_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "runs detached" in r.getMessage()
    ]


def _writable(path: Path) -> bool:
    try:
        (path / ".probe").touch()
    except OSError:
        return False
    (path / ".probe").unlink()
    return True


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` unwritable for this process until the block ends (or the test is skipped)."""
    path.chmod(0o555)
    immutable = False
    if _writable(path) and shutil.which("chattr"):  # root: chmod is not enough
        immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        if _writable(path):
            pytest.skip("neither chmod nor chattr makes a directory read-only for this user")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def test_a_run_directory_that_cannot_be_created_detaches_then_attaches(tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the run's parent directory should be")
    run_dir = blocker / "run"
    opt = _sgd()
    with Kernel(run_dir, optimizer=opt, settings=RETRY_AT_ONCE) as kernel:
        _train(kernel, range(5))
        assert len(_detach_warnings(caplog)) == 1  # one loud warning, not one per step
        assert "Not a directory" in _detach_warnings(caplog)[0]
        blocker.unlink()
        _train(kernel, range(5, 8))
        state = read_kernel_state(run_dir)
        assert state is not None and state.last_step == 7 and state.status == "running"
    steps = [
        MetricRecord.model_validate_json(line).step
        for line in (run_dir / METRICS_FILE).read_text().splitlines()
    ]
    assert steps == list(range(8))  # the metrics logged while detached were kept
    assert len(_detach_warnings(caplog)) == 1


def test_a_read_only_run_directory_detaches_then_attaches(run_dir, send, caplog):
    run_dir.mkdir()
    opt = _sgd()
    with _read_only(run_dir):
        kernel = Kernel(run_dir, optimizer=opt, settings=RETRY_AT_ONCE)
        _train(kernel, range(3))
        assert len(_detach_warnings(caplog)) == 1
        assert not (run_dir / "kernel.json").exists()
    send(id="cut", knob="lr", value=0.05)
    _train(kernel, range(3, 5))
    kernel.close()
    assert opt.param_groups[0]["lr"] == 0.05
    assert [(r.command_id, r.decision) for r in read_ledger(run_dir)] == [("cut", "applied")]
    state = read_kernel_state(run_dir)
    assert state is not None and state.last_step == 4 and state.status == "closed"
    assert os.path.getsize(run_dir / METRICS_FILE) > 0
