"""``autopilot eval replay`` inputs: run directories, a ``trainer_state.json``, or a directory
holding one, alone or side by side with recorded runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hf_trainer_state import MAX_STEPS, write_trainer_state

from autopilot.cli import main
from autopilot.cli._common import CliError
from evals.cli import _runs
from evals.runs import write_run
from kernel import MetricRecord


def test_a_trainer_state_file_or_its_directory_is_a_run(tmp_path: Path) -> None:
    path = write_trainer_state(tmp_path / "bert-sst2")
    for given in (path, path.parent):
        [run] = _runs([str(given)], tmp_path / "out")
        assert run.name == "bert-sst2" and run.path == tmp_path / "out" / "imported" / "bert-sst2"
        assert run.info.max_steps == MAX_STEPS and "val/loss" in run.metric_names()


def test_a_directory_mixes_recorded_runs_and_trainer_states(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "mine", [MetricRecord(step=1, metrics={"val/loss": 1.0})])
    write_trainer_state(tmp_path / "runs" / "hub-a")
    write_trainer_state(tmp_path / "elsewhere" / "hub-a")
    runs = _runs([str(tmp_path / "runs"), str(tmp_path / "elsewhere")], tmp_path / "out")
    assert [r.name for r in runs] == ["hub-a", "mine", "hub-a-2"]
    assert runs[1].path == tmp_path / "runs" / "mine"  # recorded runs are read in place


def test_a_checkpoint_trainer_state_deeper_down_is_not_searched(tmp_path: Path) -> None:
    write_trainer_state(tmp_path / "hf" / "output" / "checkpoint-200")
    with pytest.raises(CliError, match="trainer_state.json"):
        _runs([str(tmp_path / "hf")], tmp_path / "out")


def test_replay_twice_into_one_out_reimports(tmp_path: Path, capsys) -> None:
    write_trainer_state(tmp_path / "hf")
    (tmp_path / "hf" / "labels.json").write_text(json.dumps({"events": [], "source": "test"}))
    out = tmp_path / "out"
    for _ in range(2):
        assert main(["eval", "replay", str(tmp_path / "hf"), "--out", str(out), "--log", ""]) == 0
    report = json.loads((out / "replay.json").read_text())
    assert [r["run"] for r in report["runs"]] == ["hf"]
    [nan_step] = [
        json.loads(line)["step"]
        for line in (out / "imported" / "hf" / "metrics.jsonl").read_text().splitlines()
        if not math.isfinite(float(json.loads(line)["metrics"]["train/loss"]))
    ]
    assert nan_step == 120
    assert "report:" in capsys.readouterr().out
