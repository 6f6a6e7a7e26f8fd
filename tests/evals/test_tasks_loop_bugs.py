"""Tasks whose own training loop writes a knob mid-run: the bug fires once, at its step, as a
real update; the kernel notices when it undoes a live change; the oracle's runs go without."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from evals.tasks import TASKS, LoopBug, train_task
from evals.tasks.train import fire
from kernel import Command, MetricRecord, append_command, new_command_id, read_ledger


@pytest.fixture(autouse=True)
def _one_thread():
    """One CPU thread, as the bench's workers train: a busy machine's threads fight."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lr_by_step(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [MetricRecord.model_validate_json(line) for line in lines]
    return {r.step: float(r.metrics["lr"]) for r in records}


@pytest.mark.parametrize(("name", "factor"), [("digits/lr_collapse", 1e-3)])
def test_the_bug_multiplies_the_lr_once_at_its_step(tmp_path, name, factor):
    task = TASKS[name]
    assert task.bug is not None and task.bug.factor == factor and not task.healthy
    step = task.bug.step
    train_task(task, 0, tmp_path, steps=step + 5)
    lr = _lr_by_step(tmp_path)
    start = task.start["lr"]
    assert {lr[s] for s in range(1, step)} == {start}
    # the update of the bug's step is the first with the bad lr, and it stays (once, not again)
    assert [lr[s] for s in range(step, step + 6)] == [pytest.approx(start * factor)] * 6


def test_the_spike_fires_at_step_400_and_leaves_the_oracles_run_alone(tmp_path):
    task = TASKS["digits/lr_spike"]
    assert task.bug == LoopBug(step=400, knob="lr", factor=300.0)
    short = dataclasses.replace(task, bug=dataclasses.replace(task.bug, step=3))
    train_task(short, 0, tmp_path / "bug", steps=4)
    assert _lr_by_step(tmp_path / "bug")[3] == pytest.approx(3.0)
    train_task(short, 0, tmp_path / "meant", steps=4, with_bug=False)
    assert set(_lr_by_step(tmp_path / "meant").values()) == {0.01}


def test_the_kernel_records_the_loop_undoing_a_live_change(tmp_path):
    task = TASKS["digits/lr_collapse"]

    def on_tick(step: int) -> None:
        if step == 10:
            command = Command(id=new_command_id("t"), source="human", knob="lr", value=0.02)
            append_command(tmp_path, command)

    train_task(task, 0, tmp_path, steps=32, on_tick=on_tick)
    rows = [r for r in read_ledger(tmp_path) if r.knob == "lr"]
    assert [r.decision for r in rows] == ["applied", "overridden"]
    overridden = rows[1]
    assert overridden.step is not None and overridden.step >= 30
    assert overridden.after == pytest.approx(0.02 * 1e-3)


def test_a_loss_weight_bug_changes_the_weight_the_loss_reads():
    weights = {"aux": 1.0}
    fire(LoopBug(step=1, knob="loss.aux", factor=100.0), None, weights)  # type: ignore[arg-type]
    assert weights == {"aux": 100.0}


def test_the_new_bad_starts_exist():
    assert TASKS["breast_cancer/lr_low"].start["lr"] == 1e-5
    assert TASKS["digits_aux/loss_weight_100"].start["loss.aux"] == 100.0


def test_a_bug_must_fit_its_task():
    task = TASKS["digits/good"]
    with pytest.raises(ValueError, match="knob must be one of"):
        dataclasses.replace(task, name="digits/x", bug=LoopBug(step=1, knob="loss.aux", factor=2))
    with pytest.raises(ValueError, match="within the run's 600 steps"):
        dataclasses.replace(task, name="digits/x", bug=LoopBug(step=601, knob="lr", factor=2))
    with pytest.raises(ValueError, match="factor must be > 0 and not 1"):
        LoopBug(step=1, knob="lr", factor=1.0)
    with pytest.raises(ValueError, match="lr or loss"):
        LoopBug(step=1, knob="weight_decay", factor=2.0)


def test_the_bench_report_lists_the_reaction_to_a_bug():
    from evals.report import _bench_markdown
    from evals.results import BenchReport, BenchRun, Intervention

    change = Intervention(step=401, knob="", op="rewind", source="kernel")
    run = BenchRun(task="digits/lr_spike", policy="rules", seed=0, final=0.1, wall_s=1.0,
                   mode="live", bug_step=400, reaction_steps=1, interventions=[change])  # fmt: skip
    report = BenchReport(tasks=[run.task], policies=["rules"], seeds=1, key_metric="val/loss",
                         key_mode="min", runs=[run], oracles=[], cells=[], wall_s=1.0,
                         workers=1, created=0.0, mode="live", step_ms=10.0)  # fmt: skip
    text = _bench_markdown(report, None)
    assert "- mode: live" in text and "10 ms a step" in text
    assert "| digits/lr_spike | rules | 0 | 400 | 1 | 401: rewind (kernel) |" in text


def test_the_reflex_rescues_only_the_autopilots_run_of_the_spike(tmp_path):
    """``none`` is the run left alone (reflexes off); under the rules the kernel's reflex
    rewinds the spike, and the bench counts that rewind and the steps it took."""
    from autopilot.config import Settings
    from evals.bench.jobs import policy_run

    task, steps = TASKS["digits/lr_spike"], 420
    (tmp_path / "none").mkdir()
    none = policy_run(task, "none", 0, tmp_path / "none", Settings(), steps=steps)
    assert not [r for r in read_ledger(tmp_path / "none") if r.op == "rewind"]
    assert none.bug_step == 400 and none.mode is None and none.reaction_steps is None
    (tmp_path / "rules").mkdir()
    rules = policy_run(task, "rules", 0, tmp_path / "rules", Settings(), steps=steps)
    rewinds = [c for c in rules.interventions if c.op == "rewind"]
    assert rewinds and rewinds[0].source == "kernel" and rewinds[0].step > 400
    assert rules.mode == "lockstep" and rules.reaction_steps is not None
    assert rules.final is not None and none.final is not None and rules.final < none.final
