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

When the memory store is PostgreSQL (``[memory] url`` or ``$AUTOPILOT_MEMORY_URL``), the
checkpoints live in that database instead (``langgraph-checkpoint-postgres``, the same plain
serializer), so a watcher restarted on another machine resumes where the first stopped.
``checkpointer_for`` chooses. Every run shares that database, so a run's thread must be
named by something every machine reads alike: not its path (mounted elsewhere on another
machine), nor the kernel's ``started_at`` (a new segment changes it, and two runs may share
a directory name and a second), but a random id minted once and kept in the run directory's
``autopilot/graph.json`` (``run``), after the directory's name for a reader of the database.
``autopilot reset`` removes ``graph.json``, and so starts a new thread too.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from autopilot.errors import AutopilotError
from kernel.jsonl import read_json, write_json_atomic
from kernel.state import AUTOPILOT_DIR
from memory.store import StoreError, is_postgres

if TYPE_CHECKING:
    from autopilot.config import Settings

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "graph.sqlite"
REFUSED_SUFFIX = ".refused"
WAL_PAGES = 256
"""SQLite checkpoints the WAL into the database once it holds this many pages (1 MiB)."""
WAL_LIMIT_BYTES = 1 << 20
"""A WAL larger than this after a checkpoint is truncated to it."""
RUN_ID_FILE = "graph.json"
"""Where a run keeps the id that names its thread in a shared (PostgreSQL) checkpointer."""
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class CheckpointRefused(AutopilotError):
    """The graph checkpoint is not one this watcher wrote: it holds more than plain values,
    or cannot be read."""


class CheckpointUnavailable(AutopilotError):
    """The checkpoint database cannot be reached or used (I/O, not content)."""


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


class Checkpointer(NamedTuple):
    """A saver, the connection (or pool) to close after it, and the thread to resume."""

    saver: BaseCheckpointSaver[Any]
    conn: Any
    thread: str


def checkpointer_for(
    run_dir: Path, settings: Settings, *, thread: str = "autopilot-0", refused: str | None = None
) -> Checkpointer:
    """The watcher's checkpointer: ``autopilot/graph.sqlite`` in the run directory, or the
    memory store's PostgreSQL database when that is where the store is.

    Args:
        run_dir: the run's directory (its ``autopilot/`` folder exists).
        settings: the loaded settings (``settings.memory.store_url()`` decides).
        thread: the local thread name (``autopilot-0``, or what an older watcher left).
        refused: why the last checkpoint was not trusted: it is set aside (SQLite) or its
            thread deleted (PostgreSQL), and a fresh one opened.

    Raises:
        sqlite3.DatabaseError: the SQLite file is not a database.
        CheckpointUnavailable: the PostgreSQL server cannot be reached or used.
    """
    state_dir = run_dir / AUTOPILOT_DIR
    url = settings.memory.store_url()
    if not is_postgres(url):
        if refused is not None:
            refuse(state_dir, refused)
        local, conn = open_saver(state_dir)
        return Checkpointer(local, conn, thread)
    shared = f"{run_dir.resolve().name[:80]}.{run_thread(state_dir)}.{thread}"
    saver, pool = _open_postgres_saver(url)
    if refused is not None:
        logger.warning(
            "the graph checkpoint of thread %s was refused (%s); it was deleted and the "
            "autopilot starts afresh from the run's files",
            shared,
            refused,
        )
        saver.delete_thread(shared)
    return Checkpointer(saver, pool, shared)


def run_thread(state_dir: Path) -> str:
    """The run's id for a shared checkpointer: the one kept in ``graph.json``, or a new one
    written there (the watcher holds the run's lock, so no other watcher races it)."""
    path = state_dir / RUN_ID_FILE
    try:
        meta = read_json(path)
    except Exception:  # a garbled file from another tool: a new id
        meta = None
    meta = meta if isinstance(meta, dict) else {}
    known = meta.get("run")
    if isinstance(known, str) and _RUN_ID.fullmatch(known):
        return known
    meta["run"] = uuid.uuid4().hex
    write_json_atomic(path, meta)
    return str(meta["run"])


def _open_postgres_saver(url: str) -> tuple[BaseCheckpointSaver[Any], Any]:
    """A PostgresSaver on a one-connection pool (renewed when the server drops it), with
    its tables set up; the connection is tried first, for a message that says what to do."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from memory.postgres import connect, redact

    try:
        connect(url).close()
    except StoreError as exc:
        raise CheckpointUnavailable(str(exc)) from None
    options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=1,
        kwargs=options,
        check=ConnectionPool.check_connection,
        open=True,
    )
    try:
        saver = PostgresSaver(pool, serde=PlainSerializer())
        saver.setup()
    except Exception as exc:
        pool.close()
        raise CheckpointUnavailable(
            f"cannot set up the graph checkpoint in {redact(url)}: {exc}"
        ) from None
    return saver, pool


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


def prune(saver: BaseCheckpointSaver[Any], config: RunnableConfig) -> None:
    """Delete every checkpoint of ``config``'s thread but the latest, and their writes."""
    thread = str(config["configurable"]["thread_id"])
    if not isinstance(saver, SqliteSaver):  # PostgreSQL: the saver's own, in a transaction
        saver.prune([thread], strategy="keep_latest")  # type: ignore[attr-defined]
        return
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


def truncate_wal(conn: Any) -> None:
    """Fold the WAL into the database and truncate it to nothing (on close); a PostgreSQL
    connection has nothing to fold."""
    if not isinstance(conn, sqlite3.Connection):
        return
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:  # a full disk: the WAL stays, bounded, for next time
        logger.warning("could not truncate the checkpoint's WAL: %s", exc)


__all__ = [
    "CHECKPOINT_FILE",
    "Checkpointer",
    "CheckpointRefused",
    "CheckpointUnavailable",
    "PlainSerializer",
    "checkpointer_for",
    "open_saver",
    "prune",
    "refuse",
    "run_thread",
    "truncate_wal",
]
