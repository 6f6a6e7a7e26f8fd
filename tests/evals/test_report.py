"""Reports rendered from hand-built results, and the results log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from autopilot.tokens import Usage
from evals.report import (
    bench_table,
    format_duration,
    replay_table,
    write_bench_report,
    write_replay_report,
)
from evals.results import (
    Alarm,
    BenchCell,
    BenchReport,
    BenchRun,
    Intervention,
    KindScore,
    LabelKind,
    OracleResult,
    ReplayReport,
    ReplayRun,
)
from evals.results_log import append_result, git_commit, read_results

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _replay_run(
    name: str, events: list, tokens: int = 0, usd: float = 0.0, alarms: int = 0
) -> ReplayRun:
    return ReplayRun(run=name, path=f"evals/corpus/{name}", key_metric="val/loss", steps=100,
                     last_step=2000, events=events, alarms=alarms, episodes=min(alarms, 1),
                     ticks=40, usage=Usage(tokens_in=tokens, tokens_out=tokens // 4,
                                           cost_usd=usd),
                     llm_calls=40 if tokens else 0, wall_s=1.5,
                     key_steps=list(range(0, 2001, 500)))  # fmt: skip


def _score(
    kind: LabelKind, events: int, detected: int, latency: int | None, cross: int = 0
) -> KindScore:
    rate = (detected / events) if events else None
    evals = None if latency is None else 1
    return KindScore(kind=kind, events=events, detected=detected, late=events - detected,
                     false_alarms=0, cross_kind=cross, alarms=detected + cross,
                     episodes=detected + cross, precision=rate, recall=rate, f1=rate,
                     latency_median=latency, latency_max=latency, latency_evals_median=evals,
                     latency_evals_max=evals)  # fmt: skip


def _alarm(run: str, step: int, kind: str) -> Alarm:
    return Alarm(run=run, step=step, kind=kind, metric="val/loss", message=f"{kind} seen")


@pytest.fixture
def replay_report() -> ReplayReport:
    runs = [
        _replay_run("digits_plateau", [("plateau", 400)], tokens=1000, usd=0.01, alarms=1),
        _replay_run("digits_divergence", [("divergence", 400)], tokens=1360, usd=0.0123,
                    alarms=2),
        _replay_run("digits_healthy", [], tokens=800, usd=0.008, alarms=1),
    ]  # fmt: skip
    scores = [
        _score("plateau", 1, 1, 120, cross=1),
        _score("divergence", 1, 1, 10),
        _score("overfitting", 0, 0, None),
    ]
    return ReplayReport(policy="ai", tolerance_steps=300, tolerance_evals=3,
                        prompt_version="analyst-v3", model="gpt-4o-mini", runs=runs,
                        scores=scores, healthy_runs=1, healthy_runs_alarmed=1,
                        healthy_runs_alarmed_fraction=1.0, healthy_steps=2000,
                        healthy_alarms=1, false_alarms_per_1k_healthy_steps=0.5,
                        tokens_per_run=1240.0, usd_per_run=0.0101, wall_s=62.0,
                        git_commit="abc123", created=1_700_000_000.0)  # fmt: skip


ALARMS = [
    _alarm("digits_plateau", 520, "plateau"),
    _alarm("digits_divergence", 600, "plateau"),
    _alarm("digits_divergence", 410, "divergence"),
    _alarm("digits_healthy", 300, "oscillation"),
]
Curve = tuple[list[int], list[float | None]]
CURVES: dict[str, Curve] = {
    "digits_plateau": ([0, 500, 1000, 2000], [2.3, 0.9, 0.88, 0.88]),
    "digits_divergence": ([0, 200, 400, 600], [2.3, 1.0, 40.0, None]),
}


def test_replay_markdown_has_the_kind_and_run_tables(
    replay_report: ReplayReport, tmp_path: Path
) -> None:
    md = write_replay_report(replay_report, ALARMS, tmp_path / "replay", CURVES)
    text = md.read_text()
    assert md == tmp_path / "replay" / "report.md"
    header = ("| kind | events | detected | late | FP | cross | P | R | F1 | lat(steps) med/max "
              "| lat(evals) med/max | episodes | alarms |")  # fmt: skip
    assert header in text
    assert "| plateau | 1 | 1 | 0 | 0 | 1 | 1.000 | 1.000 | 1.000 | 120/120 | 1/1 | 2 | 2 |" in text
    assert "| overfitting | 0 | 0 | 0 | 0 | 0 | - | - | - | - | - | 0 | 0 |" in text
    assert "- healthy runs alarmed: 1 of 1 (100 %)" in text
    assert "- episodes: 3\n- alarms: 4" in text
    assert "300 steps or 3 evaluations after onset, whichever ends later" in text
    alarms = "divergence@410, plateau@600"
    assert f"| digits_divergence | divergence@400 | {alarms} | 1,700 | 0.0123 |" in text
    assert "| digits_healthy | healthy | oscillation@300 | 1,000 | 0.008 |" in text
    assert "0.5 per 1,000 steps (alarms of every kind: 1, over 2,000 steps)" in text
    assert "tokens per run: 1,240" in text and "gpt-4o-mini" in text and "analyst-v3" in text
    assert "wall time: 1m02s" in text and "abc123" in text
    assert replay_table(replay_report) in text


def test_replay_markdown_of_the_rules_policy_has_no_llm_section(
    replay_report: ReplayReport, tmp_path: Path
) -> None:
    rules = replay_report.model_copy(update={"policy": "rules", "model": None})
    text = write_replay_report(rules, [], tmp_path).read_text()
    assert "## LLM" not in text
    assert "| digits_plateau | plateau@400 | - |" in text


def test_a_replay_report_from_before_issue_11_still_loads_and_renders(
    replay_report: ReplayReport, tmp_path: Path
) -> None:
    old = replay_report.model_dump(mode="json")
    for key in ("tolerance_evals", "healthy_runs", "healthy_runs_alarmed",
                "healthy_runs_alarmed_fraction"):  # fmt: skip
        del old[key]
    for run in old["runs"]:
        del run["episodes"], run["evaluations"]
    for score in old["scores"]:
        for key in ("cross_kind", "alarms", "episodes", "latency_evals_median",
                    "latency_evals_max"):  # fmt: skip
            del score[key]
        score["after_other_event"] = 23  # alarms, one by one: not a figure of runs
    loaded = ReplayReport.model_validate(old)
    assert loaded.tolerance_evals is None and loaded.scores[0].cross_kind == 0
    text = write_replay_report(loaded, ALARMS, tmp_path, CURVES).read_text()
    assert "detection window: 300 steps after onset\n" in text
    assert "healthy runs alarmed: 0 of 0 (-)" in text


def test_key_steps_stay_out_of_the_json(replay_report: ReplayReport) -> None:
    dumped = json.loads(replay_report.model_dump_json())
    assert "key_steps" not in dumped["runs"][0] and dumped["runs"][0]["evaluations"] == 0
    assert replay_report.runs[0].key_steps == [0, 500, 1000, 1500, 2000]


def test_replay_plot_is_a_png(replay_report: ReplayReport, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_replay_report(replay_report, ALARMS, tmp_path, CURVES)
    _assert_png(tmp_path / "detections.png")


@pytest.fixture
def bench_report() -> BenchReport:
    curve: Curve = ([0, 100, 200, 300], [2.3, 1.1, 0.6, 0.45])
    blown: Curve = ([0, 100, 200, 300], [2.3, 9.0, 80.0, None])
    lr_cut = [Intervention(step=150, knob="lr", before=0.5, after=0.05, source="rules")]
    runs = [
        BenchRun(task="digits/lr_high", policy="none", seed=0, final=0.9, wall_s=3.0,
                 curve=curve),
        BenchRun(task="digits/lr_high", policy="none", seed=1, final=None, diverged=True,
                 wall_s=3.0, curve=blown),
        BenchRun(task="digits/lr_high", policy="rules", seed=1, final=0.3246, wall_s=3.1,
                 interventions=lr_cut, curve=curve),
        BenchRun(task="digits/lr_high", policy="rules", seed=0, final=0.3, wall_s=3.2,
                 interventions=lr_cut, curve=blown),
        BenchRun(task="digits/healthy", policy="none", seed=0, final=0.25, wall_s=3.0,
                 curve=curve),
    ]  # fmt: skip
    cells = [
        BenchCell(task="digits/lr_high", policy="none", seeds=2, median=None, lo=0.9, hi=None,
                  gap_closed=0.0, interventions=0.0, wall_s=6.0, runs_used=2),
        BenchCell(task="digits/lr_high", policy="rules", seeds=2, median=0.3123, lo=0.3,
                  hi=0.3246, gap_closed=0.85, interventions=1.0, wall_s=6.3, runs_used=2),
        BenchCell(task="digits/healthy", policy="none", seeds=1, median=0.25, lo=0.25, hi=0.25,
                  gap_closed=None, interventions=0.0, wall_s=3.0, runs_used=1),
        BenchCell(task="digits/lr_high", policy="oracle", seeds=2, median=0.2345, lo=None,
                  hi=None, gap_closed=1.0, interventions=0, wall_s=54.0, runs_used=18),
    ]  # fmt: skip
    oracle = OracleResult(setup="digits", params={"lr": 0.01, "weight_decay": 1e-4},
                          final=0.2345, grid_points=9, runs_used=18, wall_s=54.0)  # fmt: skip
    return BenchReport(tasks=["digits/lr_high", "digits/healthy"], policies=["none", "rules"],
                       skipped={"ai": "no provider configured"}, seeds=2, key_metric="val/loss",
                       key_mode="min", runs=runs, oracles=[oracle], cells=cells, wall_s=125.0,
                       workers=4, git_commit="abc123", created=1_700_000_000.0)  # fmt: skip


def test_bench_markdown_has_the_main_and_oracle_tables(
    bench_report: BenchReport, tmp_path: Path
) -> None:
    text = write_bench_report(bench_report, tmp_path).read_text()
    assert "| digits/lr_high | none | inf (0.9-inf) | 0% | 0 | 0 | 0 | 6.0 | 2 |" in text
    assert "| digits/lr_high | rules | 0.3123 (0.3-0.3246) | 85% | 1 | 0 | 0 | 6.3 | 2 |" in text
    assert "| digits/healthy | none | 0.25 | - | 0 | 0 | 0 | 3.0 | 1 |" in text
    assert "| digits/lr_high | oracle | 0.2345 | 100% | 0 | 0 | 0 | 54.0 | 18 |" in text
    assert "| digits | lr=0.01, weight_decay=0.0001 | 0.2345 | 9 | 18 | 54.0 |" in text
    assert "skipped policies: ai (no provider configured)" in text
    assert "val/loss (lower is better)" in text and "wall time: 2m05s" in text
    assert "(none - policy) / (none - oracle)" in text
    assert bench_table(bench_report) in text
    assert "![digits/lr_high](curves_digits_lr_high.png)" in text


def test_bench_plots_one_png_per_task(bench_report: BenchReport, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_bench_report(bench_report, tmp_path)
    _assert_png(tmp_path / "curves_digits_lr_high.png")
    _assert_png(tmp_path / "curves_digits_healthy.png")


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


# --- results log -------------------------------------------------------------------------------


def _head(cwd: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_append_result_writes_a_line_with_this_repos_commit(
    replay_report: ReplayReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    log = tmp_path / "logs" / "results.jsonl"
    entry = append_result(log, replay_report, command=["autopilot", "eval", "replay"])
    [line] = log.read_text().splitlines()
    assert json.loads(line) == entry
    assert entry["git_commit"] == _head(ROOT) and git_commit() == _head(ROOT)
    assert entry["kind"] == "replay" and entry["command"] == ["autopilot", "eval", "replay"]
    assert entry["scores"]["plateau"]["latency_median"] == 120
    assert entry["scores"]["overfitting"]["precision"] is None
    assert entry["false_alarms_per_1k_healthy_steps"] == 0.5 and entry["runs"] == 3
    assert (entry["healthy_runs"], entry["healthy_runs_alarmed"]) == (1, 1)
    assert (entry["episodes"], entry["alarms"], entry["tolerance_evals"]) == (3, 4, 3)
    plateau = entry["scores"]["plateau"]
    assert (plateau["cross_kind"], plateau["latency_evals_max"], plateau["alarms"]) == (1, 1, 2)


def test_the_committed_results_log_still_reads() -> None:
    entries = read_results(ROOT / "evals" / "results.jsonl")
    replays = [e for e in entries if e["kind"] == "replay"]
    assert replays and all("scores" in e for e in replays)


def test_two_appends_outside_a_repo_give_two_lines_without_a_commit(
    bench_report: BenchReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    log = tmp_path / "results.jsonl"
    append_result(log, bench_report, command=["autopilot", "eval", "bench"])
    infinite = bench_report.cells[0].model_copy(update={"hi": float("inf")})
    append_result(log, bench_report.model_copy(update={"cells": [infinite]}), command=["x"])
    with log.open("a") as f:
        f.write('{"torn": ')
    first, second = read_results(log)
    assert first["git_commit"] is None and first["git_dirty"] is None
    assert first["mode"] == "lockstep"  # a live bench's entry says "live", with its step_ms
    assert first["cells"][1] == {"task": "digits/lr_high", "policy": "rules", "median": 0.3123,
                                 "lo": 0.3, "hi": 0.3246, "gap_closed": 0.85,
                                 "interventions": 1.0, "usd": 0.0, "wall_s": 6.3}  # fmt: skip
    assert first["oracles"][0]["final"] == 0.2345 and "curve" not in json.dumps(first)
    assert second["cells"][0]["hi"] is None


def test_read_results_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_results(tmp_path / "absent.jsonl") == []


# --- durations ---------------------------------------------------------------------------------


def test_durations_read_short() -> None:
    assert [format_duration(s) for s in (5, 62, 7500)] == ["5s", "1m02s", "2h05m"]
