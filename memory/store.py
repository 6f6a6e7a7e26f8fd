"""The memory store: one interface, one conformance suite, a backend per database.

``open_store(url)`` gives a ``MemoryStore``: ``sqlite:///PATH`` (or a plain path) is one file,
nothing to set up; ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (or ``postgres://``) is a
database that runs on several machines share (``memory.postgres``). The schema is versioned:
opening a store applies the migrations it lacks, in one transaction each, and refuses a store
written by a newer version (it says which).

Example:
    >>> import tempfile, time
    >>> from memory.records import RunRecord
    >>> store = open_store(tempfile.mkdtemp() + "/memory.sqlite")
    >>> store.put_run(RunRecord(run_id="r1", run_dir="runs/r1", started_at=time.time()))
    >>> [r.run_id for r in store.runs()]
    ['r1']
    >>> store.close()
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from memory.records import InterventionRecord, RunRecord


class StoreError(Exception):
    """A store that cannot be opened or used, with what to do about it."""


class MemoryStore(Protocol):
    """What every backend does (``tests/memory/test_store.py`` holds them to it)."""

    schema_version: int

    def put_run(self, run: RunRecord) -> None:
        """Insert ``run``, or replace the record of the same ``run_id``."""
        ...

    def run(self, run_id: str) -> RunRecord | None: ...

    def runs(self, *, task_key: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; of one task with ``task_key``."""
        ...

    def add_intervention(self, item: InterventionRecord) -> None:
        """Record ``item`` (its run must be stored); the same command id twice is kept
        once, the later record winning (an effect measured after the change was stored)."""
        ...

    def interventions(
        self,
        *,
        run_id: str | None = None,
        task_key: str | None = None,
        kind: str | None = None,
        knob: str | None = None,
    ) -> list[InterventionRecord]:
        """The interventions matching every filter given, in the order they happened."""
        ...

    def forget(self, run_id: str) -> bool:
        """Delete a run and its interventions; whether there was one."""
        ...

    def close(self) -> None: ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str | Path) -> bool:
    """Whether ``url`` names a PostgreSQL store."""
    return str(url).startswith(POSTGRES_SCHEMES)


def open_store(url: str | Path) -> MemoryStore:
    """The store at ``url``: ``sqlite:///PATH``, a file path, or ``postgresql://...``.

    Raises:
        StoreError: for a scheme with no backend, or a store that cannot be opened.
    """
    text = str(url)
    if is_postgres(text):
        return _open_postgres(text)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"no memory backend for {scheme}://; use sqlite:///PATH, a path, or "
            "postgresql://USER:PASSWORD@HOST:PORT/DB"
        )
    from memory.sqlite import SQLiteStore

    return SQLiteStore.shared(Path(text))


def _open_postgres(url: str) -> MemoryStore:
    try:
        from memory.postgres import PostgresStore
    except ImportError as exc:  # psycopg is a dependency, but an install may lack it
        raise StoreError(
            f"the PostgreSQL memory store needs psycopg ({exc}): pip install 'psycopg[binary]>=3.1'"
        ) from None
    return PostgresStore(url)
