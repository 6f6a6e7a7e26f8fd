"""The observer reads the current run segment only: a reused run directory's old curve is
never spliced onto the new one."""

from __future__ import annotations

from pathlib import Path

import torch

from autopilot.observe import fold_segment, read_metrics, start_offset
from kernel import Kernel


def _two_runs(run_dir: Path) -> None:
    _run(run_dir, range(5620, 5631))
    _run(run_dir, range(0, 3))


def test_a_new_autopilot_starts_at_the_current_segment(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    records, _, _ = read_metrics(tmp_path, start_offset(tmp_path))
    assert [(r.step, r.segment) for r in records] == [(0, 1), (1, 1), (2, 1)]


def test_a_read_across_segments_keeps_the_latest(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    records, _, _ = read_metrics(tmp_path, 0)
    assert [r.step for r in records] == [0, 1, 2]


def _run(run_dir: Path, steps: range) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with Kernel(run_dir, optimizer=opt) as kernel:
        for step in steps:
            kernel.log(step, {"train/loss": 1.0 / (step + 1)})
            kernel.step(step)


def test_a_watcher_starts_new_windows_when_a_segment_begins(tmp_path: Path) -> None:
    _run(tmp_path, range(5620, 5631))
    records, offset, inode = read_metrics(tmp_path, 0)
    segment, windows, best = fold_segment(None, {}, {}, records, window=100)
    assert (segment, windows["train/loss"][0][-1]) == (0, 5630)
    _run(tmp_path, range(0, 3))
    records, offset, inode = read_metrics(tmp_path, offset, inode)
    segment, windows, best = fold_segment(segment, windows, best, records, window=100)
    assert (segment, windows["train/loss"][0]) == (1, [0, 1, 2])
    assert best["train/loss"] == [1.0 / 3, 2]
