"""The SQLite backend of the memory store: one file, WAL journal, versioned migrations.

Records are stored as their JSON (the typed model is the one schema) beside the columns the
queries filter on. ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; the
version is kept in ``schema_info``. Several processes (a watcher, the CLI) may use one file:
writes wait up to ``BUSY_TIMEOUT_S`` for each other.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memory.records import InterventionRecord, RunRecord
from memory.store import StoreError

BUSY_TIMEOUT_S = 10.0
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_info (version INTEGER NOT NULL);
    INSERT INTO schema_info (version) VALUES (0);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        task_key TEXT NOT NULL,
        started_at REAL NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX runs_by_task ON runs (task_key, started_at);
    CREATE TABLE interventions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        command_id TEXT,
        kind TEXT,
        knob TEXT,
        record TEXT NOT NULL
    );
    CREATE UNIQUE INDEX interventions_by_command ON interventions (run_id, command_id)
        WHERE command_id IS NOT NULL;
    CREATE INDEX interventions_by_kind ON interventions (kind, knob);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SQLiteStore:
    """``MemoryStore`` on one SQLite file (created, with its folder, when missing).

    Raises:
        StoreError: when the file cannot be opened or was written by a newer schema.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users = 0
        self._lock = threading.RLock()
        """One connection, shared by the threads of a process (a watcher's tick, the CLI)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self.schema_version = self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the memory store {path}: {exc}") from exc

    def _migrate(self) -> int:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the memory store {self.path} has schema version {version}, newer than this "
                f"autopilot's {SCHEMA_VERSION}: upgrade train-autopilot, or point the store "
                "elsewhere"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                if self._version() >= target:  # another process migrated meanwhile
                    continue
                for statement in _statements(MIGRATIONS[target - 1]):
                    self._db.execute(statement)
                self._db.execute("UPDATE schema_info SET version = ?", (target,))
        return SCHEMA_VERSION

    def _version(self) -> int:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'"
        ).fetchone()
        if not exists:
            return 0
        row = self._db.execute("SELECT version FROM schema_info").fetchone()
        return int(row[0]) if row else 0

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def _read(self, query: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: RunRecord) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO runs (run_id, task_key, started_at, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET task_key = excluded.task_key, "
                "started_at = excluded.started_at, record = excluded.record",
                (run.run_id, run.task_key, run.started_at, run.model_dump_json()),
            )

    def run(self, run_id: str) -> RunRecord | None:
        rows = self._read("SELECT record FROM runs WHERE run_id = ?", (run_id,))
        return RunRecord.model_validate_json(rows[0][0]) if rows else None

    def runs(self, *, task_key: str | None = None) -> list[RunRecord]:
        query, args = "SELECT record FROM runs", []
        if task_key is not None:
            query, args = query + " WHERE task_key = ?", [task_key]
        rows = self._read(query + " ORDER BY started_at, run_id", args)
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def forget(self, run_id: str) -> bool:
        with self._transaction():
            done = self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return done.rowcount > 0

    # -- interventions -----------------------------------------------------------------------
    def add_intervention(self, item: InterventionRecord) -> None:
        with self._transaction():
            if self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (item.run_id,)).fetchone():
                self._upsert(item)
                return
        raise StoreError(f"no run {item.run_id!r} in the memory store: put_run it first")

    def _upsert(self, item: InterventionRecord) -> None:
        values = (item.run_id, item.step, item.command_id, item.kind, item.knob)
        if item.command_id is not None:
            self._db.execute(
                "DELETE FROM interventions WHERE run_id = ? AND command_id = ?",
                (item.run_id, item.command_id),
            )
        self._db.execute(
            "INSERT INTO interventions (run_id, step, command_id, kind, knob, record) "
            "VALUES (?, ?, ?, ?, ?, ?)",
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
        where: list[str] = []
        args: list[object] = []
        for column, value in (("i.run_id", run_id), ("r.task_key", task_key)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        for column, value in (("i.kind", kind), ("i.knob", knob)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        query = "SELECT i.record FROM interventions i JOIN runs r ON r.run_id = i.run_id"
        if where:
            query += " WHERE " + " AND ".join(where)
        rows = self._read(query + " ORDER BY r.started_at, i.step, i.id", args)
        return [InterventionRecord.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        """Release this user's share; the connection closes with its last user."""
        with _OPEN_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            if _OPEN.get(self.path) is self:
                del _OPEN[self.path]
        with self._lock:
            self._db.close()

    @classmethod
    def shared(cls, path: Path) -> SQLiteStore:
        """The process's open store on ``path`` (one connection and lock for all its
        users: `autopilot serve` ticks many runs in threads of one process, and 100
        connections to one file would wait on each other's locks past the busy timeout),
        opened when there is none; each user ``close``s its own share."""
        key = path.resolve()
        with _OPEN_LOCK:
            store = _OPEN.get(key)
            if store is None:
                store = _OPEN[key] = cls(key)
            store._users += 1
            return store


_OPEN: dict[Path, SQLiteStore] = {}
_OPEN_LOCK = threading.Lock()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error), holding the store's
    lock: one writer at a time in the process, and SQLite's lock across processes."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._lock.release()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
