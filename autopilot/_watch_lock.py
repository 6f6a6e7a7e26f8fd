"""The watcher's lock file: one autopilot per run directory, and who holds it.

``autopilot/watch.lock`` is held with ``flock`` while an autopilot lives and says
``PID MODE HOST``. The lock, not the pid, tells whether the watcher is alive: the kernel
drops it when the process dies (``kill -9`` included), while a pid can be a zombie, or
reused by another process, or belong to another machine that shares the run directory.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from autopilot.errors import AutopilotError

LOCK_FILE = "watch.lock"
_TRIES = 5
"""A ``status`` probing the lock holds it for microseconds: a starting watcher tries again."""


@dataclass(frozen=True, kw_only=True)
class Holder:
    """What a lock file says, and whether its holder is alive (``None``: cannot tell, it
    runs on another host and this host sees no lock)."""

    pid: str
    mode: str
    host: str
    alive: bool | None


def acquire(path: Path, mode: str) -> int:
    """Hold ``path`` exclusively while this process lives; the open descriptor.

    Raises:
        AutopilotError: another autopilot holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == _TRIES - 1:
                holder = os.read(fd, 200).decode(errors="replace").split(" ")[0] or "unknown"
                os.close(fd)
                raise AutopilotError(
                    f"another autopilot is watching {path.parent.parent} (pid {holder}); "
                    "stop it first, or watch another run directory"
                ) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {mode} {socket.gethostname()}".encode())
    return fd


def holder(path: Path) -> Holder | None:
    """Who holds (or last held) ``path``; ``None`` when no autopilot ever did."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    pid, mode, host = (text.split(" ", 2) + ["", ""])[:3]
    if _held(path):
        return Holder(pid=pid, mode=mode, host=host, alive=True)
    # No lock seen here. A holder on another machine may use a filesystem whose locks do
    # not reach this one: say so rather than guess.
    remote = bool(host) and host != socket.gethostname()
    return Holder(pid=pid, mode=mode, host=host, alive=None if remote else False)


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False
