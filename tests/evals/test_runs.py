"""Recorded runs: kernel-format metrics written and read back, labels validated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evals.errors import RunFormatError
from evals.runs import LabelEvent, Labels, RunInfo, load_run, write_run
from kernel import MetricRecord
from kernel.metrics import MetricsWriter

RECORDS = [
    MetricRecord(step=1, wall_time=10.5, metrics={"train/loss": 2.0, "val/loss": 2.1}),
    MetricRecord(step=2, metrics={"train/loss": float("nan"), "grad_norm": float("inf")}),
    MetricRecord(step=3, metrics={"train/loss": float("-inf")}),
]


def test_round_trip_keeps_values_nonfinite_and_labels(tmp_path: Path) -> None:
    labels = Labels(events=[LabelEvent(kind="divergence", onset_step=2)])
    write_run(tmp_path / "run", RECORDS, labels)
    run = load_run(tmp_path / "run")
    got = run.records()
    assert [r.step for r in got] == [1, 2, 3]
    assert got[0].metrics == {"train/loss": 2.0, "val/loss": 2.1} and got[0].wall_time == 10.5
    assert got[1].wall_time is None and math.isnan(got[1].metrics["train/loss"])
    assert got[1].metrics["grad_norm"] == math.inf and got[2].metrics["train/loss"] == -math.inf
    assert run.labels == labels and not run.labels.healthy
    assert run.metric_names() == ["grad_norm", "train/loss", "val/loss"]


def test_lines_match_what_the_kernel_writes(tmp_path: Path) -> None:
    metrics = {"loss": float("nan"), "acc": 0.5, "gn": float("-inf")}
    kernel_writer = MetricsWriter(tmp_path)
    kernel_writer.add(7, 1.25, metrics)
    kernel_writer.flush()
    write_run(tmp_path / "run", [MetricRecord(step=7, wall_time=1.25, metrics=metrics)])
    ours = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert ours == json.loads((tmp_path / "metrics.jsonl").read_text())


def test_no_labels_file_is_healthy(tmp_path: Path) -> None:
    write_run(tmp_path, RECORDS[:1])
    assert load_run(tmp_path).labels.healthy
    assert not (tmp_path / "labels.json").exists()


def test_missing_metrics_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RunFormatError, match="no metrics.jsonl.*evals.importers"):
        load_run(tmp_path)


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    write_run(tmp_path, RECORDS)
    with pytest.raises(RunFormatError, match="already exists"):
        write_run(tmp_path, RECORDS)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"events": [{"kind": "blowup", "onset_step": 3}]}, r"events\[0\]\.kind.*got 'blowup'"),
        ({"events": [{"kind": "plateau", "onset_step": -1}]}, r"events\[0\]\.onset_step.*-1"),
        ({"events": [{"kind": "plateau"}]}, r"events\[0\]\.onset_step: Field required"),
        ({"event": []}, "'event' is not a field; did you mean 'events'"),
        ({"events": [{"kind": "plateau", "onset_step": 3, "x": 1}]}, r"events\[0\]\.x: Extra"),
    ],
)
def test_bad_labels_name_field_and_value(tmp_path: Path, labels: object, message: str) -> None:
    write_run(tmp_path, RECORDS)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(RunFormatError, match=message) as info:
        load_run(tmp_path)
    assert info.value.path == tmp_path / "labels.json"
    assert "expected e.g." in str(info.value)


def test_malformed_metrics_line_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "metrics": {}}\n{"step": "x"}\n')
    with pytest.raises(RunFormatError, match="line 2: step: Input should be a valid integer"):
        load_run(tmp_path).records()


def test_labels_keep_extra_fields_and_validate_only_events(tmp_path: Path) -> None:
    write_run(tmp_path, RECORDS)
    extra = {"source": "hub:org/model@abc", "notes": ["eval every 50"], "rule": 2}
    events = [{"kind": "overfitting", "onset_step": 2}]
    (tmp_path / "labels.json").write_text(json.dumps({"events": events, **extra}))
    labels = load_run(tmp_path).labels
    assert labels.events == [LabelEvent(kind="overfitting", onset_step=2)]
    assert labels.model_extra == extra
    write_run(tmp_path / "copy", RECORDS, labels)
    assert json.loads((tmp_path / "copy" / "labels.json").read_text()) == {
        "events": events,
        **extra,
    }


def test_run_info_round_trips_and_defaults_to_unknown(tmp_path: Path) -> None:
    assert write_run(tmp_path / "a", RECORDS).info == RunInfo()
    info = RunInfo(source="trainer_state.json", max_steps=3, eval_steps=1, logging_steps=1)
    assert write_run(tmp_path / "b", RECORDS, info=info).info == info
    assert load_run(tmp_path / "b").info.max_steps == 3
