"""The multi-run bench on one task, two runs a sequence, in short real runs, through the
command line: every run of an autopilot sequence opens the sequence's own memory store, a
search starts from the task's configuration, and the results have their shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot.cli import main
from evals.bench import resolve_tasks
from evals.bench.multi import MultiPlan, bad_starts
from evals.errors import EvalError
from evals.results import MultiReport
from evals.results_log import read_results
from evals.tasks import TASKS
from kernel.state import read_kernel_state
from memory import open_store

TASK = "digits/lr_high"
RUNS = 2
TRIALS = 2
STEPS = 40


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiReport, Path]:
    """One multi-run bench of the rules and random search, shared by the tests."""
    out = tmp_path_factory.mktemp("multi") / "out"
    argv = ["eval", "bench", "--multi", str(RUNS), "--tasks", TASK, "--policies", "rules,random"]
    argv += ["--seeds", "1", "--trials", str(TRIALS), "--workers", "1", "--steps", str(STEPS)]
    assert main([*argv, "--out", str(out)]) == 0
    return MultiReport.model_validate_json((out / "multi.json").read_text()), out


def test_every_run_of_a_sequence_opens_the_same_memory_store(
    multi: tuple[MultiReport, Path],
) -> None:
    report, out = multi
    seq = next(s for s in report.sequences if s.policy == "rules")
    home = out / "multi" / TASK.replace("/", "_") / "rules-s0"
    store_file = (home / "memory.sqlite").resolve()
    assert seq.memory_url == f"sqlite:///{store_file}"
    runs = [home / f"run-{n}" for n in range(1, RUNS + 1)]
    for run_dir in runs:
        state = read_kernel_state(run_dir)
        assert state is not None and state.task is not None and state.task.task == TASK
    # the second run's autopilot found the first's record there and added its own
    assert [s.memory_runs for s in seq.steps] == [1, 2]
    store = open_store(store_file)
    try:
        stored = store.runs()
    finally:
        store.close()
    assert [Path(r.run_dir).resolve() for r in stored] == [r.resolve() for r in runs]
    assert len({r.fingerprint.key() for r in stored}) == 1


def test_the_results_have_their_shape(multi: tuple[MultiReport, Path]) -> None:
    report, out = multi
    assert report.tasks == [TASK] and report.policies == ["rules", "random"]
    assert report.runs == RUNS and report.trials == TRIALS and report.tolerance == 0.02
    oracle = report.oracles[TASK].final
    assert oracle is not None
    for seq in report.sequences:
        if seq.policy == "rules":
            assert len(seq.steps) == RUNS and seq.runs_used == RUNS
        else:  # it stops at the first within; its bests also train on the scored seed
            assert 1 <= len(seq.steps) <= TRIALS and seq.runs_used > len(seq.steps)
        for step in seq.steps:
            assert step.final is not None and step.vs_oracle is not None
            assert step.vs_oracle == pytest.approx((step.final - oracle) / oracle)
            assert step.within == (step.vs_oracle <= report.tolerance)
        assert seq.needed == next((s.number for s in seq.steps if s.within), None)
    search = next(s for s in report.sequences if s.policy == "random")
    assert search.steps[0].params == TASKS[TASK].start  # the default configuration first
    assert search.memory_url is None and all(s.memory_runs is None for s in search.steps)
    assert [(c.policy, c.budget, len(c.needed)) for c in report.cells] == [
        ("rules", RUNS, 1),
        ("random", TRIALS, 1),
    ]
    for c in report.cells:
        assert len(c.vs_oracle) == len(c.within) and all(0 <= k <= 1 for k in c.within)
    entry = read_results(out / "results.jsonl")[-1]
    assert entry["kind"] == "multi" and [c["policy"] for c in entry["cells"]] == [
        "rules",
        "random",
    ]
    assert "rules + memory: runs" in (out / "multi.md").read_text()


def test_the_plan_takes_the_bad_starts_and_rejects_other_policies() -> None:
    assert bad_starts(resolve_tasks("digits")) == [
        "digits/lr_high",
        "digits/lr_low",
        "digits/lr_spike",
        "digits/lr_collapse",
    ]
    with pytest.raises(EvalError, match="unknown policy 'none' for --multi"):
        MultiPlan(tasks=[TASK], policies=["none"], runs=2)
    with pytest.raises(EvalError, match="at least 1"):
        MultiPlan(tasks=[TASK], policies=["rules"], runs=0)
