"""What a replay hands the scoring: the key metric's evaluations, episodes, the horizon in the
shadow ``kernel.json``, the healthy runs that alarmed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autopilot.cli import main
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.diagnoses import Diagnosis
from evals.errors import EvalError
from evals.replay import _alarms, replay, replay_run
from evals.runs import RunInfo, load_run, write_run
from kernel import MetricRecord
from kernel.state import read_kernel_state

CORPUS = Path(__file__).resolve().parents[2] / "evals" / "corpus"


def _sparse_run(path: Path, info: RunInfo | None = None):
    """Train loss every 10 steps, val loss every 100, 600 steps."""
    records = [
        MetricRecord(
            step=s,
            metrics={"train/loss": 1.0 / (1 + s)} | ({"val/loss": 1.0} if s % 100 == 0 else {}),
        )
        for s in range(0, 601, 10)
    ]
    return write_run(path, records, info=info)


def test_the_shadow_kernel_publishes_the_recorded_horizon(tmp_path: Path, llm_settings) -> None:
    run = _sparse_run(tmp_path / "hf", RunInfo(source="hf", max_steps=5000))
    replay_run(run, policy="rules", settings=llm_settings, scratch_root=tmp_path / "scratch")
    state = read_kernel_state(tmp_path / "scratch" / "hf")
    assert state is not None and state.max_steps == 5000


def test_a_run_without_a_known_horizon_publishes_none(tmp_path: Path, llm_settings) -> None:
    run = _sparse_run(tmp_path / "mine")
    replay_run(run, policy="rules", settings=llm_settings, scratch_root=tmp_path / "scratch")
    state = read_kernel_state(tmp_path / "scratch" / "mine")
    assert state is not None and state.max_steps is None


def test_the_run_keeps_its_key_metrics_evaluations_in_memory_only(
    tmp_path: Path, llm_settings
) -> None:
    run = _sparse_run(tmp_path / "r")
    result, _, _ = replay_run(run, policy="rules", settings=llm_settings, key_metric="val/loss")
    assert result.key_steps == [0, 100, 200, 300, 400, 500, 600] and result.evaluations == 7
    assert "key_steps" not in result.model_dump()
    by_train, _, _ = replay_run(run, policy="rules", settings=llm_settings, key_metric="train/loss")
    assert by_train.evaluations == 61  # a train loss: every logged point


def test_alarms_carry_the_episode_and_onset_of_their_diagnosis() -> None:
    diagnoses = [
        Diagnosis(kind="plateau", metric="val/loss", step=900, message="flat",
                  episode="plateau-600", onset_step=600),
        Diagnosis(kind="oscillation", metric="train/loss", step=900, message="jagged"),
    ]  # fmt: skip
    record = DecisionRecord(id="d1", step=900, mode="suggest", diagnoses=diagnoses)
    first, second = _alarms("r", record)
    assert (first.episode, first.onset_step) == ("plateau-600", 600)
    assert (second.episode, second.onset_step) == (None, None)


def test_replayed_alarms_match_the_decisions_episodes(tmp_path: Path, llm_settings) -> None:
    shutil.copytree(CORPUS / "digits_divergence", tmp_path / "runs" / "digits_divergence")
    run = load_run(tmp_path / "runs" / "digits_divergence")
    result, alarms, _ = replay_run(
        run, policy="rules", settings=llm_settings, scratch_root=tmp_path / "scratch"
    )
    decisions = [v.record for v in DecisionLog(tmp_path / "scratch" / run.name).read()]
    diagnosed = [(d.step, d.kind, d.episode, d.onset_step) for r in decisions for d in r.diagnoses]
    assert alarms and [(a.step, a.kind, a.episode, a.onset_step) for a in alarms] == diagnosed
    keys = {a.episode if a.episode is not None else i for i, a in enumerate(alarms)}
    assert result.episodes == len(keys) and result.alarms == len(alarms)


def test_the_report_counts_healthy_runs_and_evaluations(tmp_path: Path, llm_settings) -> None:
    for name in ("digits_divergence", "digits_healthy"):
        shutil.copytree(CORPUS / name, tmp_path / name)
    runs = [load_run(tmp_path / n) for n in ("digits_divergence", "digits_healthy")]
    report, alarms = replay(runs, policy="rules", settings=llm_settings, tolerance_evals=2)
    assert (report.healthy_runs, report.tolerance_evals) == (1, 2)
    alarmed = int(any(a.run == "digits_healthy" for a in alarms))
    assert report.healthy_runs_alarmed == alarmed
    assert report.healthy_runs_alarmed_fraction == alarmed
    divergence = next(s for s in report.scores if s.kind == "divergence")
    if divergence.detected:  # the detectors are not this test's subject
        assert divergence.latency_evals_max is not None


def test_a_negative_evaluation_tolerance_is_refused(tmp_path: Path, llm_settings, capsys) -> None:
    run = _sparse_run(tmp_path / "r")
    with pytest.raises(EvalError, match="tolerance_evals must be >= 0, got -1"):
        replay([run], policy="rules", settings=llm_settings, tolerance_evals=-1)
    code = main(["eval", "replay", str(run.path), "--out", str(tmp_path / "o"),
                 "--tolerance-evals", "-1"])  # fmt: skip
    assert code == 2 and "tolerance_evals must be >= 0" in capsys.readouterr().err
