"""Memory written and read by the live autopilot: a real training run leaves its record and
measured interventions in a real SQLite store; the next run of the same task starts with
what the first needed (applied in auto modes, to review in suggest modes), its rules take
the lessons as priors, and the LLM's context carries their lines. A store that cannot be
opened turns memory off with the reason, and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from autopilot.config import MemorySettings, Mode, Settings
from autopilot.decisions import DecisionLog
from autopilot.diagnoses import Diagnosis
from autopilot.policies._base import PolicyContext
from autopilot.policies.rules import RulePolicy
from autopilot.remember import RunMemory
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from evals.tasks import TASKS, train_task
from kernel import KernelState, KnobSpec, TaskInfo, read_kernel_state, read_ledger
from memory import InterventionRecord, RunRecord, TaskFingerprint, open_store
from memory.lessons import Lesson

TASK = TASKS["digits/lr_low"]  # lr 1e-4: the rules raise it twice, each measured better


def _train(run_dir: Path, settings: Settings, mode: Mode = "auto") -> Autopilot:
    torch.set_num_threads(1)
    pilot = Autopilot(run_dir, mode=mode, settings=settings)
    try:
        train_task(TASK, 1, run_dir, on_tick=lambda step: None if pilot.tick() else None)
    finally:
        pilot.close()
    return pilot


def _applied(run_dir: Path) -> list[Any]:
    return [r for r in read_ledger(run_dir) if r.decision == "applied" and r.knob == "lr"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(memory=MemorySettings(url=f"sqlite:///{tmp_path / 'memory.sqlite'}"))


def test_a_second_run_starts_with_what_the_first_run_of_its_task_needed(
    tmp_path: Path, settings: Settings
) -> None:
    _train(tmp_path / "first", settings)
    first = _applied(tmp_path / "first")
    assert [r.for_diagnosis for r in first] == ["plateau", "plateau"]  # lr x2, twice
    store = open_store(settings.memory.store_url())
    [run] = store.runs()
    assert run.start_knobs["lr"] == pytest.approx(1e-4) and run.ended_at is not None
    assert run.final is not None and len(run.trajectory) > 10
    cases = store.interventions(run_id=run.run_id)
    assert [(c.kind, c.knob, c.verdict) for c in cases] == [("plateau", "lr", "better")] * 2
    assert cases[0].evidence.get("slow") is True  # the decision's evidence, not its prose

    _train(tmp_path / "second", settings)
    second = _applied(tmp_path / "second")
    recalls = [r for r in second if r.for_diagnosis == "recall"]
    assert [r.after for r in recalls] == pytest.approx([2e-4, 4e-4])  # x4, in two x2 steps
    assert recalls[-1].step is not None and recalls[-1].step < first[0].step  # (max_up)
    assert len(store.runs(task_key=run.task_key)) == 2
    store.close()


def test_in_suggest_mode_the_start_plan_waits_for_review(
    tmp_path: Path, settings: Settings
) -> None:
    _train(tmp_path / "first", settings)
    _train(tmp_path / "second", settings, mode="suggest")
    items = ReviewQueue(tmp_path / "second", settings).items()
    recalls = [i for i in items if i.proposal.kind == "recall"]
    assert recalls and "memory: the last run of this task needed lr x4" in (
        recalls[0].proposal.diagnosis
    )
    assert "weak: 1 run" in recalls[0].proposal.diagnosis
    assert not [r for r in _applied(tmp_path / "second") if r.source != "human"]


def test_the_lessons_reach_the_rules_and_the_llm_context(
    tmp_path: Path, settings: Settings
) -> None:
    _train(tmp_path / "first", settings)
    _train(tmp_path / "second", settings)
    memory = RunMemory(tmp_path / "third", settings)
    kernel = read_kernel_state(tmp_path / "second")
    assert kernel is not None
    memory.peek(kernel.model_copy(update={"started_at": kernel.started_at + 1}))
    assert "plateau: lr x2 better 2 of 2" in memory.notes()
    assert "2 earlier runs, 2 lessons from them" in memory.status()  # plateau and recall
    memory.close()


def _plateau_ctx(lessons: list[Lesson]) -> PolicyContext:
    plateau = Diagnosis(kind="plateau", metric="val/loss", step=300, message="flat")
    return PolicyContext(
        step=300,
        mode="auto",
        key_metric="val/loss",
        key_mode="min",
        diagnoses=[plateau],
        knobs={"lr": KnobSpec(name="lr", kind="float", value=1e-3, lo=1e-7, hi=1.0)},
        lessons=lessons,
    )


def _lesson(direction: str, factor: float, **counts: int) -> Lesson:
    return Lesson.model_validate(
        {"kind": "plateau", "knob": "lr", "direction": direction, "factor": factor, **counts}
    )


def test_the_rules_skip_what_memory_measured_worse_and_reuse_what_worked() -> None:
    cut_worse = _lesson("down", 0.5, worse=3, runs=2)
    raise_better = _lesson("up", 3.0, better=2, runs=2)
    proposal = RulePolicy().propose(_plateau_ctx([cut_worse, raise_better]))
    assert [(a.knob, a.multiplier) for a in proposal.actions] == [("lr", 3.0)]
    assert "lr x0.5 skipped, from memory: plateau: lr x0.5 worse 3 of 3" in proposal.reasoning
    alone = RulePolicy().propose(_plateau_ctx([cut_worse]))
    assert alone.actions == []  # nothing is tried that memory did not vouch for
    better_cut = RulePolicy().propose(_plateau_ctx([_lesson("down", 0.3, better=2, runs=2)]))
    assert [a.multiplier for a in better_cut.actions] == [0.3]
    weak = RulePolicy().propose(_plateau_ctx([_lesson("down", 0.5, worse=1, runs=1)]))
    assert [a.multiplier for a in weak.actions] == [0.5]  # one observation changes nothing
    assert "memory (weak, not used)" in weak.reasoning


def test_a_store_that_cannot_be_opened_turns_memory_off_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = Settings(memory=MemorySettings(url=f"sqlite:///{blocker / 'memory.sqlite'}"))
    pilot = _train(tmp_path / "run", settings)
    reason = pilot.context.memory.off_reason
    assert reason is not None and "memory is off for this run" in reason and str(blocker) in reason
    assert [r.for_diagnosis for r in _applied(tmp_path / "run")] == ["plateau", "plateau"]
    decisions = (tmp_path / "run" / "autopilot" / "decisions.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in decisions)  # the autopilot went on deciding


def test_memory_switched_off_in_the_config_is_said_by_status(tmp_path: Path) -> None:
    off = Settings(memory=MemorySettings(enabled=False))
    memory = RunMemory(tmp_path, off)
    assert memory.status().startswith("memory is off ([memory] enabled = false)")


def _seed_store(url: str, cases: list[dict[str, Any]]) -> KernelState:
    """A store with one earlier run of a task (``cases`` its interventions); the kernel
    state of a new run of the same task."""
    knobs = [
        KnobSpec(name="lr", kind="float", value=0.1, lo=1e-6, hi=1.0),
        KnobSpec(name="weight_decay", kind="float", value=1e-5, lo=0.0, hi=1.0),
    ]
    task = TaskInfo(task="toy", model="MLP", optimizer="AdamW", n_params=100)
    store = open_store(url)
    store.put_run(
        RunRecord(
            run_id="earlier",
            run_dir="/runs/earlier",
            started_at=1.0,
            fingerprint=TaskFingerprint(**task.model_dump()),
            start_knobs={"lr": 0.1, "weight_decay": 1e-5},
            trajectory=[(0, 2.0), (1000, 0.5)],
        )
    )
    for i, case in enumerate(cases):
        fields = {"run_id": "earlier", "source": "rules", "verdict": "better", **case}
        store.add_intervention(InterventionRecord.model_validate({"command_id": f"c{i}", **fields}))
    store.close()
    return KernelState(pid=1, host="h", started_at=2.0, heartbeat=2.0, knobs=knobs, task=task)


def test_a_plan_comes_when_the_earlier_run_needed_it_and_never_repeats_an_event(
    tmp_path: Path, settings: Settings
) -> None:
    kernel = _seed_store(
        settings.memory.store_url(),
        [
            {
                "step": 221,
                "kind": "overfitting",
                "knob": "weight_decay",
                "before": 1e-5,
                "after": 1e-2,
            },
            {"step": 131, "kind": "divergence", "knob": "lr", "before": 0.1, "after": 0.05},
            {
                "step": 300,
                "kind": "plateau",
                "knob": "lr",
                "before": 0.05,
                "after": 0.025,
                "evidence": {"too_big": True},
            },
            {"step": 900, "kind": "plateau", "knob": "lr", "before": 0.025, "after": 0.0125},
            {
                "step": 200,
                "kind": "plateau",
                "knob": "lr",
                "before": 0.01,
                "after": 0.1,
                "evidence": {"lr_collapsed": 0.01},
            },  # a collapse's restore answers a bug
        ],  # fmt: skip
    )
    memory = RunMemory(tmp_path / "run", settings)
    assert memory.begin(kernel, "val/loss", "min")
    plan = {p.knob: p for p in memory.start_plan({"lr": 0.1, "weight_decay": 1e-5})}
    assert plan["weight_decay"].due_step == 221
    assert plan["weight_decay"].factor == pytest.approx(1000)
    # the divergence's cut and the late cut (past half the run) are not planned; the cut the
    # update ratio called for (too_big) is, from the start
    assert plan["lr"].due_step == 0 and plan["lr"].factor == pytest.approx(0.5)
    assert "the last run of this task needed lr x0.5" in plan["lr"].describe()
    assert "weak: 1 run" in plan["lr"].describe()
    cut = {
        "seq": 1, "step": 30, "wall_time": 0.0, "decision": "applied", "command_id": "r-30",
        "source": "rules", "op": "set", "knob": "lr", "before": 0.3, "after": 0.15,
        "for_diagnosis": "recall",
    }  # fmt: skip
    memory.note([cut], [], max_steps=1000, log=DecisionLog(tmp_path / "run"))
    left = memory.start_plan({"lr": 0.3, "weight_decay": 1e-5})  # a schedule moved it: 0.3
    assert [p.knob for p in left] == ["weight_decay"]  # the lr part is done: x0.5 applied
    memory.close()


def test_the_llm_analyst_reads_the_lessons_in_its_prompt(
    tmp_path: Path, settings: Settings
) -> None:
    from autopilot.context import build_context
    from autopilot.policies._prompt_fields import analyst_fields
    from autopilot.state import TickContext

    _train(tmp_path / "first", settings)
    _train(tmp_path / "second", settings)
    kernel = read_kernel_state(tmp_path / "second")
    assert kernel is not None
    third = kernel.model_copy(update={"started_at": kernel.started_at + 1})
    ctx = TickContext.create(tmp_path / "third", settings, "ai_suggest")
    assert ctx.memory.begin(third, "val/loss", "min")
    plateau = Diagnosis(kind="plateau", metric="val/loss", step=300, message="flat")
    state: dict[str, Any] = {
        "step": 300, "key_metric": "val/loss", "key_mode": "min", "metrics_offset": 0,
        "windows": {}, "best": {}, "diagnoses": [plateau.model_dump(mode="json")],
        "kernel": third.model_dump(mode="json"),
    }  # fmt: skip
    policy_ctx = build_context(ctx, state)  # type: ignore[arg-type]
    assert [lesson.kind for lesson in policy_ctx.lessons] == ["plateau"]
    memory = str(analyst_fields(policy_ctx, memory_tokens=120)["memory"])
    assert "plateau: lr x2 better 2 of 2" in memory
    ctx.memory.close()


def test_a_plan_that_kept_measuring_better_goes_one_step_further_each_run(
    tmp_path: Path, settings: Settings
) -> None:
    for name in ("first", "second", "third"):
        _train(tmp_path / name, settings)
    recalls = [r.after for r in _applied(tmp_path / "third") if r.for_diagnosis == "recall"]
    assert recalls == pytest.approx([2e-4, 4e-4, 8e-4])  # x4 the last run, x2 further
