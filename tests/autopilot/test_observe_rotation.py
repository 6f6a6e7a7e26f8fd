"""A watcher that is behind when ``metrics.jsonl`` is rotated reads every record once, in
order: it finishes the rotated file from its offset before it reads the new one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conftest import FAST

from autopilot.observe import read_metrics, start_offset
from kernel import Kernel
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_paths

ROTATING = dataclasses.replace(FAST, metrics_rotate_bytes=1000, metrics_keep=3)


def _log_until_rotated(kernel: Kernel, run_dir: Path, first: int, rotations: int) -> int:
    """Log steps from ``first`` until ``rotations`` more rotated files exist; the next step."""
    target = len(rotated_paths(run_dir / METRICS_FILE)) + rotations
    step = first
    while len(rotated_paths(run_dir / METRICS_FILE)) < target:
        _log(kernel, step)
        step += 1
    for extra in range(step, step + 3):  # a few records in the new file too
        _log(kernel, extra)
    return step + 3


def _log(kernel: Kernel, step: int) -> None:
    kernel.log(step, {"train/loss": 1.0 / (step + 1)})
    kernel.step(step)


def test_a_watcher_behind_across_one_and_two_rotations_reads_each_record_once(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    with Kernel(tmp_path, settings=ROTATING) as kernel:
        kernel.log(0, {"train/loss": 1.0})
        kernel.step(0)
        offset = start_offset(tmp_path)
        records, offset, inode = read_metrics(tmp_path, offset)
        seen += [r.step for r in records]
        step = _log_until_rotated(kernel, tmp_path, 1, rotations=1)
        records, offset, inode = read_metrics(tmp_path, offset, inode)
        seen += [r.step for r in records]
        assert seen == list(range(step))
        step = _log_until_rotated(kernel, tmp_path, step, rotations=2)
        records, offset, inode = read_metrics(tmp_path, offset, inode)
        seen += [r.step for r in records]
        assert seen == list(range(step))
        records, offset, inode = read_metrics(tmp_path, offset, inode)
    assert records == [] and seen == list(range(step))


def test_the_recent_tail_reaches_into_the_newest_rotated_file(tmp_path: Path) -> None:
    from autopilot.metrics_tail import recent_metrics

    with Kernel(tmp_path, settings=ROTATING) as kernel:
        step = _log_until_rotated(kernel, tmp_path, 0, rotations=1)
    steps = [r.step for r in recent_metrics(tmp_path, max_bytes=1500)]
    assert steps == list(range(steps[0], step)) and len(steps) > 3
