"""A recorded run whose ``metrics.jsonl`` was rotated reads the rotated files oldest first,
then the current one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from evals.runs import load_run
from kernel import Kernel, KernelSettings
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_paths

ROTATING = KernelSettings(flush_interval_s=0.0, metrics_rotate_bytes=1000, metrics_keep=10)


def _run(run_dir: Path, steps: range, settings: KernelSettings = ROTATING) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with Kernel(run_dir, optimizer=opt, settings=settings) as kernel:
        for step in steps:
            kernel.log(step, {"train/loss": 1.0 / (step + 1)})
            kernel.step(step)


def test_records_span_the_rotated_files_oldest_first(tmp_path: Path) -> None:
    _run(tmp_path, range(100))
    assert len(rotated_paths(tmp_path / METRICS_FILE)) >= 3
    assert [r.step for r in load_run(tmp_path).records()] == list(range(100))


def test_segments_across_rotated_files(tmp_path: Path) -> None:
    _run(tmp_path, range(50, 80), dataclasses.replace(ROTATING, metrics_rotate_bytes=0))
    _run(tmp_path, range(40))
    run = load_run(tmp_path)
    assert run.segments() == [0, 1]
    assert [r.step for r in run.records()] == list(range(40))
    assert [r.step for r in run.records(segment=0)] == list(range(50, 80))
