"""The PostgreSQL backend of the memory store: runs on many machines share one database.

The same schema and semantics as ``memory.sqlite``: records stored as their JSON text
(``JSON``, not ``JSONB``, which would print ``1e20`` back as an integer) and validated by
the typed model as they are read, beside the columns the queries filter on;
``MIGRATIONS[i]`` taking the schema from version ``i`` to ``i + 1``, the version kept in
``schema_info``, a newer schema refused. One connection per store, shared by the threads
of a process under a lock, renewed when the server dropped it (a read is then tried again,
a write raises); each write is one transaction. Migrations take an advisory lock, so
processes that open a new database at the same time apply each migration once.

``connect(url)`` is the one place that turns a connection failure into a ``StoreError``
that says what to do; the URL's password never appears in a message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from memory.records import InterventionRecord, RunRecord
from memory.store import StoreError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
MIGRATION_LOCK = 0x6D656D6F  # pg_advisory_xact_lock key: b"memo"
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_info (version INTEGER NOT NULL);
    INSERT INTO schema_info (version) VALUES (0);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        task_key TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        record JSON NOT NULL
    );
    CREATE INDEX runs_by_task ON runs (task_key, started_at);
    CREATE TABLE interventions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        step BIGINT NOT NULL,
        command_id TEXT,
        kind TEXT,
        knob TEXT,
        record JSON NOT NULL
    );
    CREATE UNIQUE INDEX interventions_by_command ON interventions (run_id, command_id)
        WHERE command_id IS NOT NULL;
    CREATE INDEX interventions_by_kind ON interventions (kind, knob);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
_AUTH = ("28P01", "28000")  # invalid password, no pg_hba.conf entry / role refused
_NO_DATABASE = "3D000"


def redact(url: str) -> str:
    """``url`` without its password (``postgresql://USER@HOST:PORT/DB``), for messages.

    Example:
        >>> redact("postgresql://bob:secret@db.example:5433/memory")
        'postgresql://bob@db.example:5433/memory'
    """
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(a URL that does not parse)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', 'localhost')}{port}/{info.get('dbname', '')}"


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection to ``url`` (``postgresql://`` or ``postgres://``), in autocommit mode.

    Raises:
        StoreError: the URL does not parse, the server cannot be reached, refuses the login
            or has no such database; the message says which and what to do.
    """
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise StoreError(
            "the memory store URL is not a valid PostgreSQL URL: write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        return psycopg.connect(url, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise StoreError(_why(exc, info, redact(url))) from None


def _why(exc: psycopg.Error, info: dict[str, Any], where: str) -> str:
    text = " ".join(str(exc).split())  # libpq's lines and tabs, on one line
    if info.get("password"):
        text = text.replace(str(info["password"]), "***")
    host, port = info.get("host", "localhost"), info.get("port", "5432")
    if exc.sqlstate in _AUTH or "authentication failed" in text:
        return (
            f"the PostgreSQL server at {host}:{port} refused the login of user "
            f"{info.get('user', '(default)')!r} ({text}): check the user and password in "
            f"the memory store URL {where}"
        )
    if exc.sqlstate == _NO_DATABASE or "does not exist" in text:
        return (
            f"the PostgreSQL server at {host}:{port} has no database "
            f"{info.get('dbname', '(default)')!r} ({text}): create it (createdb) or fix "
            f"the memory store URL {where}"
        )
    if isinstance(exc, psycopg.OperationalError):
        return (
            f"cannot reach the PostgreSQL server at {host}:{port} ({text}): check the memory "
            f"store URL {where}, or start the server"
        )
    return f"cannot open the memory store {where}: {text}"


class PostgresStore:
    """``MemoryStore`` in a PostgreSQL database (its tables created when missing).

    Raises:
        StoreError: when the server cannot be used, or the schema is newer than this code's.
    """

    def __init__(self, url: str) -> None:
        self.url, self.where = url, redact(url)
        self._lock = threading.RLock()
        """One connection, shared by the threads of a process (a watcher's tick, the CLI)."""
        self._db = connect(url)
        try:
            self.schema_version = self._migrate()
        except psycopg.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open the memory store {self.where}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise

    def _migrate(self) -> int:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the memory store {self.where} has schema version {version}, newer than this "
                f"autopilot's {SCHEMA_VERSION}: upgrade train-autopilot, or point the store "
                "elsewhere"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                if self._version() >= target:  # another process migrated meanwhile
                    continue
                db.execute(MIGRATIONS[target - 1])
                db.execute("UPDATE schema_info SET version = %s", (target,))
        return SCHEMA_VERSION

    def _version(self) -> int:
        with self._lock:
            # the catalog itself, not to_regclass: a name looked up in the cache after an
            # advisory lock may miss a table another process has just created
            db = self._conn()
            found = db.execute(
                "SELECT 1 FROM pg_catalog.pg_tables "
                "WHERE schemaname = current_schema() AND tablename = 'schema_info'"
            )
            if not found.fetchone():
                return 0
            row = db.execute("SELECT version FROM schema_info").fetchone()
        return int(row[0]) if row else 0

    def _conn(self) -> psycopg.Connection[Any]:
        if self._db.closed:  # the server restarted or dropped us: one new connection
            logger.warning("the memory store %s lost its connection; reconnecting", self.where)
            self._db = connect(self.url)
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            db = self._conn()
            try:
                with db.transaction():
                    yield db
            except psycopg.OperationalError as exc:
                raise StoreError(f"the memory store {self.where} failed: {exc}") from exc

    def _read(self, query: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``query``; a read that finds the connection dropped is tried again
        on a new one (a write is not: whether it committed is unknown, so it raises)."""
        with self._lock:
            for again in (True, False):
                try:
                    return self._conn().execute(query, args).fetchall()
                except psycopg.OperationalError as exc:
                    if not (again and self._db.closed):
                        raise StoreError(f"the memory store {self.where} failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: RunRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, task_key, started_at, record) "
                "VALUES (%s, %s, %s, %s::json) ON CONFLICT (run_id) DO UPDATE SET "
                "task_key = excluded.task_key, started_at = excluded.started_at, "
                "record = excluded.record",
                (run.run_id, run.task_key, run.started_at, run.model_dump_json()),
            )

    def run(self, run_id: str) -> RunRecord | None:
        rows = self._read("SELECT record::text FROM runs WHERE run_id = %s", (run_id,))
        return RunRecord.model_validate_json(rows[0][0]) if rows else None

    def runs(self, *, task_key: str | None = None) -> list[RunRecord]:
        query, args = "SELECT record::text FROM runs", []
        if task_key is not None:
            query, args = query + " WHERE task_key = %s", [task_key]
        rows = self._read(query + " ORDER BY started_at, run_id", args)
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def forget(self, run_id: str) -> bool:
        with self._transaction() as db:
            done = db.execute("DELETE FROM runs WHERE run_id = %s", (run_id,))
        return done.rowcount > 0

    # -- interventions -----------------------------------------------------------------------
    def add_intervention(self, item: InterventionRecord) -> None:
        with self._transaction() as db:
            # the run's row lock serializes the writers of one run, so the delete and insert
            # of one command id never race (and the run cannot be forgotten meanwhile)
            found = db.execute(
                "SELECT 1 FROM runs WHERE run_id = %s FOR NO KEY UPDATE", (item.run_id,)
            ).fetchone()
            if found:
                self._upsert(db, item)
                return
        raise StoreError(f"no run {item.run_id!r} in the memory store: put_run it first")

    @staticmethod
    def _upsert(db: psycopg.Connection[Any], item: InterventionRecord) -> None:
        values = (item.run_id, item.step, item.command_id, item.kind, item.knob)
        if item.command_id is not None:
            db.execute(
                "DELETE FROM interventions WHERE run_id = %s AND command_id = %s",
                (item.run_id, item.command_id),
            )
        db.execute(
            "INSERT INTO interventions (run_id, step, command_id, kind, knob, record) "
            "VALUES (%s, %s, %s, %s, %s, %s::json)",
            (*values, item.model_dump_json()),
        )

    def interventions(
        self,
        *,
        run_id: str | None = None,
        task_key: str | None = None,
        kind: str | None = None,
        knob: str | None = None,
    ) -> list[InterventionRecord]:
        filters = (("i.run_id", run_id), ("r.task_key", task_key), ("i.kind", kind))
        where: list[str] = []
        args: list[object] = []
        for column, value in (*filters, ("i.knob", knob)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        query = "SELECT i.record::text FROM interventions i JOIN runs r ON r.run_id = i.run_id"
        if where:
            query += " WHERE " + " AND ".join(where)
        rows = self._read(query + " ORDER BY r.started_at, i.step, i.id", args)
        return [InterventionRecord.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
