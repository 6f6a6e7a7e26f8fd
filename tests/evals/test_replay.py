"""Replaying recorded runs through the real tick graph in shadow mode, scored against labels:
with the rules, with the LLM agents of the scripted server, and from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llm_server import Body, answer

from autopilot.cli import main
from evals.errors import EvalError
from evals.replay import replay
from evals.results import Alarm, ReplayReport
from evals.runs import load_run

CORPUS = Path(__file__).resolve().parents[2] / "evals" / "corpus"
RUNS = ("digits_divergence", "digits_healthy")
ONSET = 450  # digits_divergence/labels.json
PLAN = {"actions": [{"knob": "lr", "multiplier": 0.1, "reason": "calm it"}], "confidence": 0.9,
        "reasoning": "the loss jumped"}  # fmt: skip


def analyst_says(kind: str):
    reply = {"kind": kind, "metric": "train/loss", "summary": f"looks like {kind}",
             "evidence": ["train/loss x5"], "confidence": 0.9}  # fmt: skip

    def respond(body: Body):
        schema = body["response_format"]["json_schema"]["name"]
        return answer(reply if schema == "AnalystOutput" else PLAN)(body)

    return respond


@pytest.fixture
def runs(tmp_path):
    """Copies of two corpus runs, so a test can prove nothing was written into them."""
    copies = []
    for name in RUNS:
        shutil.copytree(CORPUS / name, tmp_path / name)
        copies.append(load_run(tmp_path / name))
    return copies


def test_rules_detect_the_divergence_and_leave_the_healthy_run_alone(runs, llm_settings):
    before = {p: p.read_bytes() for run in runs for p in run.path.iterdir()}
    report, alarms = replay(runs, policy="rules", settings=llm_settings)
    divergence = next(s for s in report.scores if s.kind == "divergence")
    assert (divergence.events, divergence.detected, divergence.false_alarms) == (1, 1, 0)
    assert divergence.latency_max is not None and divergence.latency_max <= 50
    assert all(a.run == "digits_divergence" for a in alarms)
    assert (report.healthy_alarms, report.false_alarms_per_1k_healthy_steps) == (0, 0.0)
    first = next(a for a in alarms if a.kind == "divergence")
    assert first.step >= ONSET and first.evidence and first.proposer == "rules"
    assert first.proposal == ["lr x0.1"]  # what it would have done, against the logged lr
    assert report.tokens_per_run == 0 and report.usd_per_run == 0
    # shadow mode: the recorded runs are untouched
    assert {p: p.read_bytes() for run in runs for p in run.path.iterdir()} == before


def test_ai_alarms_are_the_analysts_with_their_tokens_and_cost(runs, llm_settings, llm_server):
    llm_server.script(analyst_says("divergence"))
    report, alarms = replay(runs, policy="ai", settings=llm_settings)
    divergence = next(s for s in report.scores if s.kind == "divergence")
    assert divergence.detected == 1
    # a divergence is urgent: the rules answer it at once, and the analyst's answer follows
    assert alarms and {a.proposer for a in alarms} == {"rules", "ai"}
    assert {a.kind for a in alarms if a.proposer == "ai"} == {"divergence"}
    sick = next(r for r in report.runs if r.run == "digits_divergence")
    assert sick.llm_calls >= 1 and sick.fallbacks == 0
    assert sick.usage.tokens_in == 120 * 2 * sick.llm_calls  # analyst + planner per decision
    assert report.usd_per_run > 0 and (report.prompt_version or "").startswith("analyst@")
    assert len(llm_server.calls) == 2 * sick.llm_calls  # the healthy run asked nothing


def test_an_analyst_that_finds_the_run_healthy_overrules_the_detectors_but_not_urgency(
    runs, llm_settings, llm_server
):
    llm_server.script(analyst_says("healthy"))
    report, alarms = replay(runs[:1], policy="ai", settings=llm_settings)
    assert report.runs[0].llm_calls >= 1 and report.runs[0].usage.tokens_in > 0
    # no alarm of the analyst's; what alarms there are, the rules raised at once because a
    # divergence does not wait for the LLM
    assert alarms and all(a.proposer == "rules" for a in alarms)


def test_the_ai_policy_without_a_key_says_how_to_get_one(runs, make_settings):
    settings = make_settings(llm={"api_key_env": "AUTOPILOT_TEST_UNSET_KEY"})
    with pytest.raises(EvalError, match=r"\$AUTOPILOT_TEST_UNSET_KEY"):
        replay(runs, policy="ai", settings=settings)


def test_the_command_writes_diagnoses_a_report_and_a_results_line(
    runs, tmp_path, capsys, monkeypatch
):
    out, log = tmp_path / "out", tmp_path / "out" / "results.jsonl"
    monkeypatch.chdir(tmp_path)
    # a directory of runs stands for all of them; the results log goes under --out by default
    assert main(["eval", "replay", str(tmp_path), "--out", str(out)]) == 0
    assert not (tmp_path / "evals").exists()
    lines = (out / "diagnoses.jsonl").read_text().splitlines()
    alarms = [Alarm.model_validate_json(line) for line in lines]
    assert alarms and {a.run for a in alarms} == {"digits_divergence"}
    report = ReplayReport.model_validate_json((out / "replay.json").read_text())
    assert [r.run for r in report.runs] == list(RUNS)
    md = (out / "report.md").read_text()
    assert "divergence" in md and "healthy runs alarmed: " in md and "lat(evals) med/max" in md
    assert (out / "detections.png").stat().st_size > 1000
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["kind"] == "replay"
    assert entry["healthy_runs"] == 1 and entry["tolerance_evals"] == 3
    printed = capsys.readouterr()
    assert "divergence" in printed.out and "healthy runs alarmed: " in printed.out
    assert "replay: 100%" in printed.err and "2/2" in printed.err  # the progress bar


def test_the_command_rejects_a_directory_without_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["eval", "replay", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "metrics.jsonl" in capsys.readouterr().err
