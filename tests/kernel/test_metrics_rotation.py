"""Size-based rotation of ``metrics.jsonl``: at the size, keeping the configured files, and
followed by a reader that was tailing the old file."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from conftest import FAST

from kernel import Kernel, KernelSettings, MetricRecord, read_kernel_state
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE
from kernel.rotation import rotated_path, rotated_paths

LIMIT = 1000
ROTATING = dataclasses.replace(FAST, metrics_rotate_bytes=LIMIT, metrics_keep=3)


def _kernel(run_dir: Path, settings: KernelSettings = ROTATING) -> Kernel:
    return Kernel(run_dir, settings=settings)


def _steps(path: Path) -> list[int]:
    return [MetricRecord.model_validate_json(line).step for line in path.read_text().splitlines()]


def _log(kernel: Kernel, steps: range) -> None:
    for step in steps:
        kernel.log(step, {"train/loss": 1.0 / (step + 1)})
        kernel.step(step)


def test_the_file_is_rotated_before_it_would_pass_the_size(run_dir: Path) -> None:
    with _kernel(run_dir) as kernel:
        _log(kernel, range(25))
    current = run_dir / METRICS_FILE
    files = [*rotated_paths(current), current]
    assert [p.name for p in files[:-1]] == [f"metrics.{n}.jsonl" for n in (2, 1)]
    assert all(p.stat().st_size <= LIMIT for p in files)
    for older, newer in zip(files, files[1:], strict=False):
        first_line = newer.read_bytes().split(b"\n")[0] + b"\n"
        assert older.stat().st_size + len(first_line) > LIMIT  # it was full
    assert [s for p in files for s in _steps(p)] == list(range(25))


def test_only_keep_rotated_files_are_kept(run_dir: Path) -> None:
    run_dir.mkdir()
    rotated_path(run_dir / METRICS_FILE, 7).write_text("")  # left by a run that kept more
    with _kernel(run_dir) as kernel:
        _log(kernel, range(200))
    current = run_dir / METRICS_FILE
    kept = rotated_paths(current)
    assert [p.name for p in kept] == [f"metrics.{n}.jsonl" for n in (3, 2, 1)]
    steps = [s for p in [*kept, current] for s in _steps(p)]
    assert steps == list(range(steps[0], 200)) and steps[0] > 0  # the oldest were deleted


@pytest.mark.parametrize(
    "settings",
    [
        dataclasses.replace(FAST, metrics_rotate_bytes=-1),
        dataclasses.replace(FAST, metrics_rotate_bytes=100, metrics_keep=0),
    ],
)
def test_bad_rotation_settings_are_refused(run_dir: Path, settings: KernelSettings) -> None:
    with pytest.raises(ValueError, match=r"must be >= .*, got"):
        Kernel(run_dir, settings=settings)


def test_a_tail_finishes_the_rotated_file_then_reads_the_new_one(run_dir: Path) -> None:
    tail = JsonlTail(run_dir / METRICS_FILE)
    seen: list[int] = []
    with _kernel(run_dir) as kernel:
        for start in range(0, 60, 5):  # a few records per read: across every rotation
            _log(kernel, range(start, start + 5))
            seen += [MetricRecord.model_validate_json(t).step for _, t in tail.read_new()]
    seen += [MetricRecord.model_validate_json(t).step for _, t in tail.read_new()]
    assert seen == list(range(60))
    assert tail.rotations >= 3 and tail.resets == 0


def test_a_tail_behind_by_more_than_the_kept_files_says_what_it_lost(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tail = JsonlTail(run_dir / METRICS_FILE)
    with _kernel(run_dir) as kernel:
        _log(kernel, range(5))
        assert len(tail.read_new()) == 5
        _log(kernel, range(5, 200))
    with caplog.at_level(logging.WARNING, logger="kernel.jsonl"):
        steps = [MetricRecord.model_validate_json(t).step for _, t in tail.read_new()]
    assert "the lines between are lost" in caplog.text
    assert steps == list(range(steps[0], 200))


def test_metrics_start_is_reset_once_the_segment_s_file_is_rotated(run_dir: Path) -> None:
    with _kernel(run_dir, FAST) as kernel:
        _log(kernel, range(10))
    with _kernel(run_dir) as kernel:
        _log(kernel, range(2))
        assert read_kernel_state(run_dir).metrics_start > 0  # type: ignore[union-attr]
        _log(kernel, range(2, 40))
    assert rotated_paths(run_dir / METRICS_FILE)
    assert read_kernel_state(run_dir).metrics_start == 0  # type: ignore[union-attr]
