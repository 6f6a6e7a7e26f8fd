"""The memory store: one interface, one conformance suite, a backend per database.

``open_store(url)`` gives a ``MemoryStore``: ``sqlite:///PATH`` (or a plain path) is one file,
nothing to set up. The schema is versioned: opening a store applies the migrations it lacks,
in one transaction each, and refuses a store written by a newer version (it says which).

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


def open_store(url: str | Path) -> MemoryStore:
    """The store at ``url``: ``sqlite:///PATH`` or a file path.

    Raises:
        StoreError: for a scheme with no backend, or a store that cannot be opened.
    """
    text = str(url)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"no memory backend for {scheme}:// (in {text!r}); use sqlite:///PATH or a path"
        )
    from memory.sqlite import SQLiteStore

    return SQLiteStore(Path(text))
