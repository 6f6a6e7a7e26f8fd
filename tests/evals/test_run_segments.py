"""A recorded run directory reused for a later run: readers take one segment, never a
curve spliced from step 5630 of one run onto step 0 of the next."""

from __future__ import annotations

from pathlib import Path

from autopilot.config import Settings
from evals.replay import replay_run
from evals.runs import write_run
from kernel import MetricRecord


def two_segments() -> list[MetricRecord]:
    first = [MetricRecord(step=s, metrics={"train/loss": 1.0, "old": 1.0}) for s in (5620, 5630)]
    second = [MetricRecord(step=s, segment=1, metrics={"train/loss": 2.0}) for s in (0, 10, 20)]
    return first + second


def test_a_reused_run_directory_reads_as_its_latest_segment(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", two_segments())
    assert [r.step for r in run.records()] == [0, 10, 20]
    assert run.curve("train/loss") == ([0, 10, 20], [2.0, 2.0, 2.0])
    assert run.metric_names() == ["train/loss"]
    assert [r.step for r in run.records(segment=0)] == [5620, 5630]
    assert run.segments() == [0, 1]


def test_a_run_of_one_segment_reads_as_before(tmp_path: Path) -> None:
    records = [MetricRecord(step=s, metrics={"val/loss": 1.0}) for s in range(3)]
    run = write_run(tmp_path / "run", records)
    assert [r.step for r in run.records()] == [0, 1, 2] and run.segments() == [0]


def test_the_replay_replays_the_latest_segment_alone(tmp_path: Path) -> None:
    later = [MetricRecord(step=s, segment=1, metrics={"train/loss": 2.0}) for s in range(600)]
    run = write_run(tmp_path / "run", two_segments()[:2] + later)
    result, alarms, _ = replay_run(run, policy="rules", settings=Settings())
    assert (result.steps, result.last_step, result.key_metric) == (600, 599, "train/loss")
    assert result.ticks == 60
