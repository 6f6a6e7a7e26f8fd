"""What only the PostgreSQL backend does: connection failures that say what to do (and never
show the password), both URL schemes, a connection the server dropped, migrations once."""

from __future__ import annotations

import threading

import psycopg
import pytest
from pg_server import fresh_schema

from memory.postgres import MIGRATIONS, PostgresStore, redact
from memory.records import RunRecord
from memory.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from memory.store import StoreError, open_store


def test_an_unreachable_server_names_host_and_port() -> None:
    with pytest.raises(StoreError, match=r"cannot reach .* 127\.0\.0\.1:9 .*start the server"):
        open_store("postgresql://me:hunter2@127.0.0.1:9/memory")


def test_a_wrong_password_is_named_and_not_shown(postgres_url: str) -> None:
    url = postgres_url.replace(":autopilot-test@", ":hunter2-wrong@")
    with pytest.raises(StoreError, match="refused the login of user 'postgres'") as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


def test_a_missing_database_says_to_create_it(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreError, match="no database 'no_such_db'.*createdb"):
        open_store(url)


def test_a_url_that_does_not_parse_is_not_echoed() -> None:
    with pytest.raises(StoreError, match="not a valid PostgreSQL URL") as caught:
        open_store("postgresql://me:hunter2@[bad")
    assert "hunter2" not in str(caught.value)
    assert redact("postgres://me:hunter2@db:6543/m") == "postgresql://me@db:6543/m"


def _drop_connections(admin_url: str) -> None:
    """What a server restart does to every client's connection."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )


def test_postgres_scheme_too_and_a_dropped_connection_is_renewed(postgres_url: str) -> None:
    with fresh_schema(postgres_url) as url:
        store = open_store(url.replace("postgresql://", "postgres://", 1))
        assert isinstance(store, PostgresStore)
        store.put_run(RunRecord(run_id="r1", run_dir="runs/r1", started_at=1.0))
        _drop_connections(postgres_url)
        assert [r.run_id for r in store.runs()] == ["r1"]  # a read: tried again, reconnected
        _drop_connections(postgres_url)
        with pytest.raises(StoreError, match="failed"):  # a write: whether it committed is
            store.put_run(RunRecord(run_id="r2", run_dir="runs/r2", started_at=2.0))  # unknown
        store.put_run(RunRecord(run_id="r2", run_dir="runs/r2", started_at=2.0))
        assert [r.run_id for r in store.runs()] == ["r1", "r2"]
        store.close()


def test_processes_opening_a_new_database_together_migrate_it_once(postgres_url: str) -> None:
    with fresh_schema(postgres_url) as url:
        opened: list[PostgresStore] = []
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                opened.append(PostgresStore(url))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(opened) == 4
        with psycopg.connect(url) as pg:
            assert pg.execute("SELECT count(*), max(version) FROM schema_info").fetchone() == (
                1,
                len(MIGRATIONS),
            )
        for store in opened:
            store.close()


def test_both_backends_are_at_the_same_schema_version() -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)
