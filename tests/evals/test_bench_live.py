"""The bench's live mode: the rules policy as a real ``autopilot watch`` process beside a
paced training, results marked live; the settings it hands the watcher; the CLI's flags."""

from __future__ import annotations

import tomllib

import pytest
import torch

from autopilot.cli import main
from autopilot.config import Settings
from evals.bench import BenchPlan, plan_jobs, run_bench
from evals.bench.live import READY_LINE, settings_toml
from evals.errors import EvalError
from evals.results import BenchReport

TASK = "digits/lr_high"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_live_rules_run_trains_beside_its_own_watcher_process(tmp_path):
    plan = BenchPlan(tasks=[TASK], policies=["rules"], seeds=1, workers=1, oracle=False,
                     steps=60, mode="live", step_ms=2.0)  # fmt: skip
    report = run_bench(plan, tmp_path)
    assert report.mode == "live" and report.step_ms == 2.0
    [run] = report.runs
    assert run.mode == "live" and run.curve[0][-1] == 60
    where = tmp_path / "runs" / "digits_lr_high" / "rules-s0"
    log = (where / "watch.log").read_text()
    assert READY_LINE + str(where / "run") in log  # it watched, from its own process
    assert "mode auto" in log
    assert (where / "run" / "autopilot" / "watch.lock").exists()
    assert Settings.model_validate(tomllib.loads((where / "autopilot.toml").read_text()))


def test_live_mode_changes_only_the_autopilot_policies_jobs():
    plan = BenchPlan(tasks=[TASK], policies=["none", "rules", "tune"], seeds=1, oracle=False,
                     mode="live", step_ms=5.0)  # fmt: skip
    modes = {(j.kind, j.policy): j.mode for j in plan_jobs(plan)}
    assert modes == {("tune", "none"): "lockstep", ("policy", "none"): "lockstep",
                     ("policy", "rules"): "live"}  # fmt: skip
    with pytest.raises(EvalError, match="step-ms"):
        BenchPlan(tasks=[TASK], policies=["none"], mode="live", step_ms=-1.0)


def test_the_watcher_gets_the_benchs_settings_as_a_config_file():
    settings = Settings.model_validate({
        "llm": {"base_url": "http://127.0.0.1:1/v1", "model": "test-model"},
        "prices": {"test-model": {"input": 1.0, "output": 2.0}},
        "cadence": {"tick_every_steps": 5},
    })  # fmt: skip
    text = settings_toml(settings)
    assert Settings.model_validate(tomllib.loads(text)) == settings
    assert settings_toml(Settings()) == ""


def test_the_command_takes_live_and_step_ms_and_says_the_mode(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "bench", "--tasks", "digits/good", "--policies", "none", "--seeds", "1",
            "--steps", "20", "--workers", "1", "--no-oracle", "--live", "--step-ms", "5",
            "--out", str(out), "--log", ""]  # fmt: skip
    assert main(argv) == 0
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert report.mode == "live" and report.step_ms == 5.0
    assert "mode: live" in capsys.readouterr().out
    assert "- mode: live" in (out / "report.md").read_text()
    argv = [a for a in argv if a not in ("--live", "--step-ms", "5")]
    assert main(argv) == 0
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert report.mode == "lockstep" and report.step_ms is None
    assert "mode: lock-step" in capsys.readouterr().out
