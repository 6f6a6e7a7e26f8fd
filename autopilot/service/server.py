"""Starting the service: the checks before it listens, and the uvicorn server.

On loopback (127.0.0.1, the default) a missing token is generated into the user's state
directory; on any other address the token must exist beforehand and reads need it too.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = tempfile.mkdtemp()
    >>> make_server(root, host="0.0.0.0", token_file=Path(root) / "none", env={})
    Traceback (most recent call last):
    ...
    autopilot.errors.AutopilotError: no token: a server on an address other than loopback ...
    >>> make_server(root, token_file=Path(root) / "t", env={}).token.generated
    True
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from autopilot.config import Mode
from autopilot.errors import AutopilotError
from autopilot.service.app import create_app
from autopilot.service.auth import Token, is_loopback, load_token
from autopilot.service.runs import Fleet

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8421


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A server ready to run, and the token it checks (``generated``: print it once)."""

    server: uvicorn.Server
    token: Token
    reads_need_token: bool


def make_server(
    root: str | os.PathLike[str],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    default_mode: Mode | None = None,
    config: str | None = None,
    token_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    tick: bool = True,
    workers: int = 1,
    threads: int = 4,
    warm: bool = True,
) -> Prepared:
    """A uvicorn server for the runs under ``root``; ``server.run()`` serves until stopped.
    Its autopilots tick in ``workers`` processes (1: this one), ``threads`` in each; with
    ``warm`` it reads the runs' metrics into its cache as it starts (``views.warm``).

    Raises:
        AutopilotError: ``root`` is not a directory, no token where one is needed, or
            fewer than 1 worker or thread.
    """
    if not Path(root).is_dir():
        raise AutopilotError(
            f"--runs {root} is not a directory; name the folder your runs' directories appear under"
        )
    if not 0 <= port <= 65535:
        raise AutopilotError(f"port must be within [0, 65535], got {port}")
    local = is_loopback(host)
    token = load_token(token_file, create=local, env=env)
    fleet = Fleet(root, default_mode=default_mode, config=config, workers=workers, threads=threads)
    app = create_app(
        root,
        token=token,
        reads_need_token=not local,
        fleet=fleet,
        default_mode=default_mode,
        config=config,
        tick=tick,
        warm=warm,
    )
    config_ = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return Prepared(server=uvicorn.Server(config_), token=token, reads_need_token=not local)


@dataclass(frozen=True, kw_only=True)
class Serving:
    """A server listening on loopback in a thread of this process (``serve_in_thread``)."""

    url: str
    token: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(
    root: str | os.PathLike[str],
    *,
    config: str | None = None,
    tick: bool = False,
    warm: bool = True,
) -> Serving:
    """The service for the runs under ``root`` on a free 127.0.0.1 port, in a daemon
    thread (``launch(serve=True)``, ``autopilot demo --serve``); ``tick=False`` leaves the
    autopilot to whoever runs it already.

    Raises:
        AutopilotError: it did not listen within 15 s.
    """
    with socket.socket() as probe:
        probe.bind((DEFAULT_HOST, 0))
        port = probe.getsockname()[1]
    prepared = make_server(root, port=port, config=config, tick=tick, warm=warm)
    server = prepared.server
    thread = threading.Thread(target=server.run, name="autopilot-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # set once uvicorn listens
        if time.monotonic() > deadline or not thread.is_alive():
            raise AutopilotError(f"the service did not start on {DEFAULT_HOST}:{port}")
        time.sleep(0.02)
    url = f"http://{DEFAULT_HOST}:{port}"
    return Serving(url=url, token=prepared.token.value, server=server, thread=thread)
