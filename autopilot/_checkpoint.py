"""The watcher's graph checkpoint, ``autopilot/graph.sqlite``: plain values only, bounded.

The checkpoint lives in the run directory, which is not a trusted place: whoever can write
there must gain no more than the power to send validated commands. LangGraph's default
serializer rebuilds arbitrary Python objects from msgpack (a crafted checkpoint could run
a command on resume), so the saver here stores msgpack of plain values only (JSON's types)
and reads back nothing else: the tick state is plain JSON by design. A checkpoint that holds
anything more (an extension type: an object to rebuild), is not a database, or cannot be
read back is refused with the reason, moved aside to ``graph.sqlite.refused``, and the
watcher starts afresh.

The database keeps only each thread's latest checkpoint (a resume needs nothing older),
and its write-ahead log is checkpointed often and truncated, so neither grows with the
length of the run.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver

from autopilot.errors import AutopilotError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "graph.sqlite"
REFUSED_SUFFIX = ".refused"
WAL_PAGES = 256
"""SQLite checkpoints the WAL into the database once it holds this many pages (1 MiB)."""
WAL_LIMIT_BYTES = 1 << 20
"""A WAL larger than this after a checkpoint is truncated to it."""


class CheckpointRefused(AutopilotError):
    """The graph checkpoint is not one this watcher wrote: it holds more than plain values,
    or cannot be read."""


class PlainSerializer:
    """A LangGraph ``SerializerProtocol`` for plain values: JSON's types, packed as msgpack
    (packing and unpacking the windows as JSON text made a tick half again as slow).

    Reading decodes no msgpack extension type, which is how LangGraph's serializer encodes
    the objects it rebuilds: nothing read back is more than dicts, lists, strings, numbers,
    booleans and ``None``, so a crafted checkpoint cannot construct an object, let alone
    run code.

    Example:
        >>> serde = PlainSerializer()
        >>> serde.loads_typed(serde.dumps_typed({"step": 3, "windows": {}}))
        {'step': 3, 'windows': {}}
        >>> rebuild = ormsgpack.Ext(1, ormsgpack.packb(["os", "system", ["touch owned"]]))
        >>> serde.loads_typed(("msgpack", ormsgpack.packb(rebuild)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        autopilot._checkpoint.CheckpointRefused: a checkpoint value holds more than plain ...
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return "msgpack", ormsgpack.packb(obj, default=_plain)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind, payload = data
        if kind != "msgpack":
            raise CheckpointRefused(f"checkpoint values must be plain msgpack, got {kind!r}")
        try:
            return ormsgpack.unpackb(payload)  # no ext_hook: an extension type is an error
        except (ValueError, TypeError) as exc:  # TypeError: a blob that is not bytes
            raise CheckpointRefused(
                f"a checkpoint value holds more than plain values ({exc})"
            ) from None


def _plain(value: object) -> object:
    # LangGraph records a failed node's exception among its writes: keep its text only
    if isinstance(value, BaseException):
        return repr(value)
    raise TypeError(f"the tick state must hold plain values only, got {type(value).__name__}")


def open_saver(state_dir: Path) -> tuple[SqliteSaver, sqlite3.Connection]:
    """The plain-values saver over ``state_dir/graph.sqlite``, with a bounded WAL.

    Raises:
        sqlite3.DatabaseError: the file is not a database.
    """
    # the saver writes from a background thread: the connection must allow it
    conn = sqlite3.connect(state_dir / CHECKPOINT_FILE, check_same_thread=False)
    try:
        # WAL without an fsync per tick: a crash of the process loses nothing, a power cut
        # at most the last ticks (which then run again: their side effects are idempotent)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return SqliteSaver(conn, serde=PlainSerializer()), conn


def refuse(state_dir: Path, reason: str) -> None:
    """Move a checkpoint that cannot be trusted aside (``graph.sqlite.refused``), and say so."""
    db = state_dir / CHECKPOINT_FILE
    logger.warning(
        "the graph checkpoint %s was refused (%s); it was moved to %s%s and the autopilot "
        "starts afresh from the run's files",
        db,
        reason,
        db.name,
        REFUSED_SUFFIX,
    )
    if db.exists():
        db.replace(db.with_name(db.name + REFUSED_SUFFIX))
    for suffix in ("-wal", "-shm"):  # a stale log must never be applied to a new database
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def prune(saver: SqliteSaver, config: RunnableConfig) -> None:
    """Delete every checkpoint of ``config``'s thread but the latest, and their writes."""
    thread = str(config["configurable"]["thread_id"])
    with saver.cursor() as cur:
        cur.execute("SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = ?", (thread,))
        (latest,) = cur.fetchone()
        if latest is None:
            return
        for table in ("checkpoints", "writes"):
            cur.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id < ?",  # noqa: S608
                (thread, latest),
            )


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Fold the WAL into the database and truncate it to nothing (on close)."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:  # a full disk: the WAL stays, bounded, for next time
        logger.warning("could not truncate the checkpoint's WAL: %s", exc)


__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointRefused",
    "PlainSerializer",
    "open_saver",
    "prune",
    "refuse",
    "truncate_wal",
]
