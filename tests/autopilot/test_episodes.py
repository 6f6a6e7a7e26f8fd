"""Episodes: reports of one problem join one episode until it is acted on or resolves, and a
less urgent kind on the same curve is an echo of the more urgent one (``autopilot.episodes``).

The unit tests drive ``Episodes.observe`` tick by tick with hand-made diagnoses; the last two
run the graph (``Autopilot``) on a recorded run whose ``train/loss`` stops improving.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from _runs import write_run as write_kernel_json

from autopilot.config import Settings
from autopilot.decisions import DecisionLog
from autopilot.diagnoses import Diagnosis, DiagnosisKind, Evidence
from autopilot.episodes import RESOLVE_AFTER_STEPS, Episodes, curve
from autopilot.watch import Autopilot
from evals.runs import write_run
from kernel import MetricRecord
from kernel.metrics import METRICS_FILE


def found(kind: DiagnosisKind, metric: str, step: int, **evidence: Any) -> Diagnosis:
    ev: Evidence = dict(evidence)
    return Diagnosis(
        kind=kind, metric=metric, step=step, message=f"{kind} of {metric}", evidence=ev
    )


def tick(
    book: Episodes,
    step: int,
    *reports: Diagnosis,
    applied: Iterable[Mapping[str, Any]] = (),
    cadences: Mapping[str, float | None] | None = None,
) -> list[tuple[str, str | None, int | None]]:
    """One tick's kept reports as ``(kind, episode, onset_step)``."""
    kept = book.observe(reports, step=step, applied=list(applied), cadences=cadences or {})
    return [(d.kind, d.episode, d.onset_step) for d in kept]


def fresh() -> Episodes:
    return Episodes.load({}, segment=0)


# --- one problem, one episode ------------------------------------------------------------


def test_repeated_reports_join_one_episode_that_keeps_its_onset() -> None:
    book = fresh()
    for step in (1000, 1050, 1099):
        assert tick(book, step, found("plateau", "val/loss", step)) == [
            ("plateau", "plateau-s0-1000", 1000)
        ]
    episode = book.get("plateau")
    assert episode is not None and episode.open
    assert (episode.onset_step, episode.last_seen_step) == (1000, 1099)


def test_the_episode_id_names_the_segment() -> None:
    book = Episodes.load({}, segment=3)
    assert tick(book, 40, found("plateau", "val/loss", 40)) == [("plateau", "plateau-s3-40", 40)]


def test_an_applied_change_for_the_kind_ends_the_episode_and_a_new_report_opens_another() -> None:
    book = fresh()
    tick(book, 1000, found("plateau", "val/loss", 1000))
    row = {"for_diagnosis": "plateau", "step": 1020}
    assert tick(book, 1040, found("plateau", "val/loss", 1040), applied=[row]) == [
        ("plateau", "plateau-s0-1040", 1040)
    ]
    episode = book.get("plateau")
    assert episode is not None and episode.onset_step == 1040 and episode.open


def test_the_acted_episode_records_how_and_when_it_ended() -> None:
    book = fresh()
    tick(book, 1000, found("plateau", "val/loss", 1000))
    tick(book, 1040, applied=[{"for_diagnosis": "plateau", "step": 1030}])
    episode = book.get("plateau")
    assert episode is not None
    assert (episode.ended, episode.ended_step, episode.open) == ("acted", 1030, False)


def test_a_change_for_another_kind_or_from_before_the_onset_does_not_end_it() -> None:
    book = fresh()
    tick(book, 1000, found("plateau", "val/loss", 1000))
    rows: list[dict[str, Any]] = [
        {"for_diagnosis": "overfitting", "step": 1020},  # another kind
        {"for_diagnosis": "plateau", "step": 990},  # answered an earlier episode
        {"for_diagnosis": None, "step": 1020},  # a person's change, for no diagnosis
    ]
    assert tick(book, 1040, found("plateau", "val/loss", 1040), applied=rows) == [
        ("plateau", "plateau-s0-1000", 1000)
    ]


def test_an_episode_not_reported_for_resolve_after_steps_resolves() -> None:
    book = Episodes.load({}, segment=0, resolve_after=100)
    tick(book, 1000, found("plateau", "val/loss", 1000))
    tick(book, 1099)
    still = book.get("plateau")
    assert still is not None and still.open
    tick(book, 1100)
    done = book.get("plateau")
    assert done is not None and (done.ended, done.ended_step) == ("resolved", 1100)
    assert tick(book, 1200, found("plateau", "val/loss", 1200)) == [
        ("plateau", "plateau-s0-1200", 1200)
    ]


def test_a_sparse_metric_needs_two_evaluations_without_a_report_to_resolve() -> None:
    book = Episodes.load({}, segment=0, resolve_after=100)
    cadences = {"val/loss": 500.0}  # one evaluation every 500 steps
    tick(book, 1000, found("plateau", "val/loss", 1000), cadences=cadences)
    tick(book, 1999, cadences=cadences)  # 999 steps: under two evaluations
    open_ = book.get("plateau")
    assert open_ is not None and open_.open
    tick(book, 2000, cadences=cadences)
    done = book.get("plateau")
    assert done is not None and done.ended == "resolved"


def test_the_default_resolve_after_is_the_step_count() -> None:
    book = fresh()
    tick(book, 0, found("plateau", "val/loss", 0))
    tick(book, RESOLVE_AFTER_STEPS - 1)
    e = book.get("plateau")
    assert e is not None and e.open


# --- echoes ------------------------------------------------------------------------------


def test_curve_joins_a_train_and_validation_pair() -> None:
    assert curve("train/loss") == curve("val/loss") == curve("val_loss") == "loss"
    assert curve("val/loss") != curve("val/acc")


def test_a_plateau_of_val_loss_is_dropped_while_its_overfitting_is_open() -> None:
    book = fresh()
    both = (found("plateau", "val/loss", 900), found("overfitting", "val/loss", 900))
    assert tick(book, 900, *both) == [("overfitting", "overfitting-s0-900", 900)]
    assert tick(book, 950, found("plateau", "val/loss", 950)) == []
    assert book.get("plateau") is None  # no episode was opened for the echo


def test_a_plateau_on_another_curve_is_not_an_echo() -> None:
    book = fresh()
    tick(book, 900, found("overfitting", "val/loss", 900))
    assert tick(book, 950, found("plateau", "val/acc", 950)) == [("plateau", "plateau-s0-950", 950)]


def test_overfitting_after_a_divergence_is_dropped_for_as_long_as_the_divergence_lasted() -> None:
    book = Episodes.load({}, segment=0, resolve_after=100)
    for step in range(1000, 1501, 100):  # a divergence of train/loss, steps 1000-1500
        tick(book, step, found("divergence", "train/loss", step))
    assert tick(book, 1300, found("overfitting", "val/loss", 1300, best_step=1250)) == []
    tick(book, 1600)  # resolved: it lasted 600 steps
    div = book.get("divergence")
    assert div is not None and (div.ended, div.ended_step) == ("resolved", 1600)
    late_best = {"best_step": 1700}  # a best of its own, after the divergence ended
    assert tick(book, 2150, found("overfitting", "val/loss", 2150, **late_best)) == []
    assert tick(book, 2200, found("overfitting", "val/loss", 2200, **late_best)) == [
        ("overfitting", "overfitting-s0-2200", 2200)
    ]


def test_overfitting_measured_against_a_best_from_before_the_divergence_ended_is_an_echo() -> None:
    book = Episodes.load({}, segment=0, resolve_after=100)
    tick(book, 1000, found("divergence", "train/loss", 1000))
    tick(book, 1100)  # resolved at 1100; hold 100 steps
    assert tick(book, 5000, found("overfitting", "val/loss", 5000, best_step=1100)) == []
    assert tick(book, 5000, found("overfitting", "val/loss", 5000, best_step=900)) == []
    assert tick(book, 5000, found("overfitting", "val/loss", 5000, best_step=1101)) == [
        ("overfitting", "overfitting-s0-5000", 5000)
    ]


def test_a_more_urgent_kind_is_never_dropped_by_a_less_urgent_one() -> None:
    book = fresh()
    tick(book, 900, found("plateau", "train/loss", 900))
    assert tick(book, 950, found("overfitting", "val/loss", 950)) == [
        ("overfitting", "overfitting-s0-950", 950)
    ]
    kept = tick(
        book,
        1000,
        found("plateau", "train/loss", 1000),
        found("overfitting", "val/loss", 1000),
        found("divergence", "train/loss", 1000),
    )
    # the divergence opens although both others are open on its curve; they are its echoes now
    assert kept == [("divergence", "divergence-s0-1000", 1000)]


# --- the checkpointed state --------------------------------------------------------------


def test_load_forgets_an_entry_that_does_not_validate() -> None:
    book = fresh()
    tick(book, 900, found("overfitting", "val/loss", 900))
    raw = book.dump()
    raw["plateau"] = {"id": "plateau-s0-1", "kind": "plateau"}  # no metric, no steps
    raw["divergence"] = {**raw["overfitting"], "unknown_field": 1}
    revived = Episodes.load(raw, segment=0)
    assert revived.get("plateau") is None and revived.get("divergence") is None
    assert revived.get("overfitting") == book.get("overfitting")


def test_dump_and_load_round_trip_and_the_episode_goes_on() -> None:
    book = Episodes.load({}, segment=2)
    tick(book, 900, found("overfitting", "val/loss", 900, best_step=700))
    tick(book, 1000, found("overfitting", "val/loss", 1000), found("plateau", "val/acc", 1000))
    tick(
        book,
        1050,
        found("overfitting", "val/loss", 1050),
        applied=[{"for_diagnosis": "plateau", "step": 1010}],
    )
    raw = json.loads(json.dumps(book.dump()))
    revived = Episodes.load(raw, segment=2)
    assert revived.dump() == book.dump()
    assert tick(revived, 1100, found("overfitting", "val/loss", 1100)) == [
        ("overfitting", "overfitting-s2-900", 900)
    ]


# --- through the graph -------------------------------------------------------------------


def plateau(start: int, stop: int) -> list[MetricRecord]:
    """``train/loss`` that stops improving at step 300 and stays flat after."""
    return [
        MetricRecord(step=s, metrics={"train/loss": 2.0 - 0.003 * min(s, 300) + 0.01 * (s % 3)})
        for s in range(start, stop)
    ]


def watch_plateau(run_dir: Path, mode: str, stop: int, every: int = 50) -> list[Diagnosis]:
    """Tick ``mode``'s autopilot every ``every`` steps of a plateau from step 400 to ``stop``;
    the plateau diagnoses of its decision records."""
    run = write_run(run_dir, plateau(0, 400))
    write_kernel_json(run.path, step=399)
    with Autopilot(run.path, mode=mode, settings=Settings()) as pilot:
        pilot.tick()
        for start in range(400, stop, every):
            with open(run.path / METRICS_FILE, "a", encoding="utf-8") as f:
                f.writelines(r.to_line() for r in plateau(start, start + every))
            pilot.tick()
    return [
        d
        for view in DecisionLog(run.path).read()
        for d in view.record.diagnoses
        if d.kind == "plateau"
    ]


def test_a_persisting_plateau_is_decided_once_in_suggest_mode(tmp_path: Path) -> None:
    decided = watch_plateau(tmp_path / "run", "suggest", 1300)
    assert len(decided) == 1
    [d] = decided
    assert d.episode is not None and d.episode.startswith("plateau-s")
    assert d.onset_step is not None and d.onset_step <= d.step


def test_auto_mode_decides_the_same_episode_again_while_no_change_answered_it(
    tmp_path: Path,
) -> None:
    decided = watch_plateau(tmp_path / "run", "auto", 1300)  # no kernel applies anything
    assert len(decided) >= 2
    assert len({d.episode for d in decided}) == 1 and decided[0].episode is not None
    repeat = Settings().cadence.repeat_after_steps
    steps = [d.step for d in decided]
    assert all(b - a >= repeat for a, b in zip(steps, steps[1:], strict=False))
