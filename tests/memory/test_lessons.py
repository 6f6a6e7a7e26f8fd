"""Lessons from the store's measured cases: similar tasks count, dissimilar ones do not, near
phases count more, consistency weighs, and one observation is weak."""

from __future__ import annotations

from memory.lessons import lessons, similarity
from memory.records import InterventionRecord, RunRecord, TaskFingerprint

DIGITS = TaskFingerprint(task="digits", model="MLP", optimizer="Adam", n_params=4810)
BIGGER = TaskFingerprint(model="MLP", optimizer="Adam", n_params=9000)
OTHER = TaskFingerprint(model="CharLM", optimizer="SGD", n_params=90_000)


def _run(run_id: str, fingerprint: TaskFingerprint) -> RunRecord:
    return RunRecord(run_id=run_id, run_dir=f"runs/{run_id}", started_at=0, fingerprint=fingerprint)


def _cut(
    run_id: str, verdict: str | None, *, after: object = 0.05, phase: float = 0.5, **kw: object
) -> InterventionRecord:
    fields: dict[str, object] = {
        "run_id": run_id, "step": 300, "source": "rules", "kind": "plateau", "knob": "lr",
        "before": 0.1, "after": after, "verdict": verdict, "effect_rel": 0.05, "phase": phase,
    }  # fmt: skip
    return InterventionRecord.model_validate({**fields, **kw})


def test_the_same_task_counts_fully_a_similar_one_half_and_another_not_at_all() -> None:
    assert similarity(DIGITS, DIGITS) == 1.0
    assert similarity(BIGGER, DIGITS) == 0.5
    assert similarity(OTHER, DIGITS) == 0.0
    assert similarity(DIGITS.model_copy(update={"n_params": 99_999}), DIGITS) == 1.0  # its name
    runs = [_run("a", DIGITS), _run("b", BIGGER), _run("c", OTHER)]
    found = lessons(runs, [_cut("a", "better"), _cut("b", "better"), _cut("c", "worse")], DIGITS)
    [lesson] = found
    assert (lesson.better, lesson.worse, lesson.runs, lesson.same_task) == (2, 0, 2, True)
    assert lesson.weight == 1.5 and not lesson.weak


def test_directions_kinds_and_knob_families_are_separate_lessons() -> None:
    runs = [_run("a", DIGITS)]
    cases = [
        _cut("a", "worse"),
        _cut("a", "better", after=0.2),
        _cut("a", "better", kind="overfitting"),
        _cut("a", "neutral", knob="lr[1]"),
    ]
    by_key = {(x.kind, x.knob, x.direction): x for x in lessons(runs, cases, DIGITS)}
    assert set(by_key) == {("plateau", "lr", "down"), ("plateau", "lr", "up"),
                           ("overfitting", "lr", "down")}  # fmt: skip
    down = by_key[("plateau", "lr", "down")]
    assert (down.worse, down.neutral, down.verdict) == (1, 1, "worse")  # a tie: the cautious one
    assert by_key[("plateau", "lr", "up")].factor == 2.0


def test_consistency_and_phase_weigh_and_the_run_at_hand_is_left_out() -> None:
    runs = [_run("a", DIGITS), _run("b", DIGITS), _run("now", DIGITS)]
    mixed = [_cut("a", "better"), _cut("b", "worse"), _cut("now", "worse")]
    [lesson] = lessons(runs, mixed, DIGITS, exclude_run="now")
    assert lesson.seen == 2 and lesson.consistency == 0.5 and lesson.weight == 1.0
    near = lessons(runs, [_cut("a", "better", phase=0.5)], DIGITS, phase=0.5)[0]
    far = lessons(runs, [_cut("a", "better", phase=1.5)], DIGITS, phase=0.5)[0]
    assert near.weight == 1.0 and far.weight < 0.1


def test_unmeasured_and_non_numeric_cases_teach_nothing_and_one_case_is_weak() -> None:
    runs = [_run("a", DIGITS)]
    cases = [
        _cut("a", None),
        _cut("a", "better", before=True, after=False, knob="loss.aux"),
        _cut("a", "better", op="rewind", knob=None),
    ]
    assert lessons(runs, cases, DIGITS) == []
    [one] = lessons(runs, [_cut("a", "better")], DIGITS)
    assert one.weak and one.line().endswith("weak: 1 observation")
