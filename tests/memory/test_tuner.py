"""The tuner's studies in the memory database: URLs, a study that outlives its process, and
trials left running by an autopilot that stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState
from pg_server import fresh_schema

from memory import open_store
from memory.store import StoreError
from memory.tuner import FAIL_REASON, RUN_ID, open_study, optuna_storage_url, study_name, summarize


def test_storage_url_matches_the_store_url() -> None:
    assert optuna_storage_url("sqlite:///rel/m.sqlite") == "sqlite:///rel/m.sqlite"
    assert optuna_storage_url("sqlite:////abs/m.sqlite") == "sqlite:////abs/m.sqlite"
    assert optuna_storage_url(Path("/abs/m.sqlite")) == "sqlite:////abs/m.sqlite"
    assert (
        optuna_storage_url("postgresql://u:p@db:5432/mem") == "postgresql+psycopg://u:p@db:5432/mem"
    )
    assert optuna_storage_url("postgres://db/mem") == "postgresql+psycopg://db/mem"
    with pytest.raises(StoreError, match="no tuner storage for mysql"):
        optuna_storage_url("mysql://db/mem")


def test_study_name_is_per_task_and_space() -> None:
    assert study_name("k1", ["lr"]) != study_name("k2", ["lr"])
    assert study_name("k1", ["lr", "weight_decay"]) == study_name("k1", ["weight_decay", "lr"])
    with pytest.raises(ValueError, match="task_key must be a non-empty string"):
        study_name("", ["lr"])


def test_a_study_shares_the_memory_file_and_outlives_its_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    store = open_store(url)  # the store's tables first, then Optuna's beside them
    first = open_study(url, "tune-t-lr", seed=1)
    for value in (0.1, -0.2, 0.3):
        trial = first.study.ask()
        trial.suggest_float("lr_log2_factor", -2.0, 1.0)
        first.study.tell(trial, value)
    again = open_study(url, "tune-t-lr", seed=1)
    summary = summarize(again)
    assert (summary.trials, summary.complete, summary.best_value) == (3, 3, 0.3)
    assert store.runs() == []  # the store still reads its own tables
    store.close()


def test_stale_trials_of_the_run_are_failed_with_a_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    stored = open_study(url, "tune-t-lr")
    mine, kept, other = (stored.study.ask() for _ in range(3))
    mine.set_user_attr(RUN_ID, "run-a")
    kept.set_user_attr(RUN_ID, "run-a")
    other.set_user_attr(RUN_ID, "run-b")
    failed = open_study(url, "tune-t-lr").fail_stale("run-a", keep=[kept.number], reason="stopped")
    assert failed == [mine.number]
    states = {t.number: t for t in stored.study.get_trials()}
    assert states[mine.number].state == TrialState.FAIL
    assert states[mine.number].user_attrs[FAIL_REASON] == "stopped"
    assert states[kept.number].state == states[other.number].state == TrialState.RUNNING


def test_a_study_lives_in_the_postgresql_store_too(postgres_url: str) -> None:
    with fresh_schema(postgres_url) as url:
        store = open_store(url)
        first = open_study(url, "tune-t-lr", seed=1)
        for value in (0.1, 0.4):
            trial = first.study.ask()
            trial.suggest_float("lr_log2_factor", -1.0, 1.0)
            first.study.tell(trial, value)
        summary = summarize(open_study(url, "tune-t-lr", seed=1))  # another connection
        assert (summary.trials, summary.complete, summary.best_value) == (2, 2, 0.4)
        assert store.runs() == []
        store.close()
