"""The memory store's conformance suite: every backend must pass it, SQLite on a file in
``tmp_path`` and PostgreSQL on the session's throwaway server (``pg_server``), each test in a
schema of its own."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg_server import fresh_schema
from pydantic import ValidationError

from memory.records import InterventionRecord, RunRecord, TaskFingerprint, compress_trajectory
from memory.sqlite import SCHEMA_VERSION
from memory.store import MemoryStore, StoreError, open_store

DIGITS = TaskFingerprint(task="digits", model="Sequential", optimizer="Adam", n_params=4810)
CHARLM = TaskFingerprint(model="CharMLP", optimizer="Adam", n_params=90_000)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'memory.sqlite'}"
        return
    with fresh_schema(request.getfixturevalue("postgres_url")) as schema_url:
        yield schema_url


@pytest.fixture
def store(url: str) -> Iterator[MemoryStore]:
    opened = open_store(url)
    yield opened
    opened.close()


def _run(run_id: str, fingerprint: TaskFingerprint = DIGITS, at: float = 0.0) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        run_dir=f"runs/{run_id}",
        started_at=1_800_000_000.0 + at,
        fingerprint=fingerprint,
        start_knobs={"lr": 1e-4, "weight_decay": 1e-5, "loss.aux": True, "lr[1]": [0.1, 0.2]},
        key_metric="val/loss",
        key_mode="min",
    )


def _change(run_id: str, step: int, **fields: object) -> InterventionRecord:
    base: dict[str, object] = {
        "run_id": run_id, "step": step, "source": "rules", "kind": "plateau", "knob": "lr",
        "before": 1e-4, "after": 2e-4, "command_id": f"rules-{run_id}-{step}",
        "evidence": {"slow": True, "update_ratio": 4e-4}, "phase": step / 600,
    }  # fmt: skip
    return InterventionRecord.model_validate({**base, **fields})


def test_a_run_round_trips_and_is_replaced_by_its_id(store: MemoryStore) -> None:
    run = _run("r1")
    store.put_run(run)
    assert store.run("r1") == run
    ended = run.model_copy(update={"ended_at": run.started_at + 60, "best": 0.1, "final": 0.12})
    store.put_run(ended)
    assert store.run("r1") == ended and len(store.runs()) == 1
    assert store.run("nope") is None


def test_values_come_back_exactly_as_they_went_in(store: MemoryStore) -> None:
    knobs = {"big": 1e20, "tiny": 1e-300, "two": 2.0, "groups": [0.1, 3], "on": True}
    store.put_run(_run("r1").model_copy(update={"start_knobs": knobs}))
    back = store.run("r1")
    assert back is not None and back.start_knobs == knobs
    assert [type(v) for v in back.start_knobs.values()] == [float, float, float, list, bool]


def test_runs_are_found_by_their_task(store: MemoryStore) -> None:
    for i, fp in enumerate((DIGITS, CHARLM, DIGITS)):
        store.put_run(_run(f"r{i}", fp, at=i))
    assert [r.run_id for r in store.runs(task_key=DIGITS.key())] == ["r0", "r2"]
    assert [r.run_id for r in store.runs()] == ["r0", "r1", "r2"]


def test_interventions_filter_and_keep_one_record_per_command(store: MemoryStore) -> None:
    store.put_run(_run("a"))
    store.put_run(_run("b", CHARLM, at=1))
    store.add_intervention(_change("a", 100))
    store.add_intervention(_change("a", 200, kind="imbalance", knob="loss.aux"))
    store.add_intervention(_change("b", 50))
    measured = _change("a", 100, effect_rel=0.12, verdict="better")
    store.add_intervention(measured)  # the effect, measured later: the same command
    assert store.interventions(run_id="a", kind="plateau") == [measured]
    assert [i.run_id for i in store.interventions(knob="lr")] == ["a", "b"]
    assert [i.step for i in store.interventions(task_key=CHARLM.key())] == [50]
    reflex = _change("a", 300, op="reflex", source="kernel", knob=None, command_id=None)
    store.add_intervention(reflex)
    store.add_intervention(reflex)  # no command id: nothing to merge on, both kept
    assert len(store.interventions(run_id="a")) == 4


def test_an_intervention_needs_its_run(store: MemoryStore) -> None:
    with pytest.raises(StoreError, match="put_run it first"):
        store.add_intervention(_change("ghost", 1))


def test_forget_removes_a_run_and_its_interventions(store: MemoryStore) -> None:
    store.put_run(_run("a"))
    store.add_intervention(_change("a", 100))
    assert store.forget("a") is True and store.forget("a") is False
    assert store.runs() == [] and store.interventions() == []


def test_a_store_opened_again_keeps_its_data_and_version(url: str) -> None:
    first = open_store(url)
    first.put_run(_run("kept"))
    first.close()
    again = open_store(url)
    assert again.schema_version == SCHEMA_VERSION and [r.run_id for r in again.runs()] == ["kept"]
    again.close()


def test_two_writers_share_one_store(url: str) -> None:
    stores = [open_store(url), open_store(url)]
    stores[0].put_run(_run("shared"))
    errors: list[BaseException] = []

    def write(store: MemoryStore, offset: int) -> None:
        try:
            for step in range(offset, 60, 2):
                store.add_intervention(_change("shared", step))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [i.step for i in stores[1].interventions(run_id="shared")] == list(range(60))
    for s in stores:
        s.close()


def test_a_newer_schema_is_refused_with_what_to_do(url: str) -> None:
    open_store(url).close()
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE schema_info SET version = ?", (SCHEMA_VERSION + 1,))
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("UPDATE schema_info SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this autopilot.*upgrade train-autopilot"):
        open_store(url)


def test_an_unknown_scheme_says_which_work() -> None:
    with pytest.raises(StoreError, match="sqlite:///PATH"):
        open_store("mysql://db/memory")


def test_records_are_validated() -> None:
    with pytest.raises(ValidationError):
        _change("a", 1, verdict="great")
    with pytest.raises(ValidationError):
        RunRecord.model_validate({"run_id": "", "run_dir": "", "started_at": 0})
    assert len(compress_trajectory([(s, 0.0) for s in range(1000)])) == 200
