"""The service: ``autopilot serve`` watches a root of run directories, ticks the autopilot
of every run whose mode is set from one process, and serves an HTTP API over the same core
the CLI uses (commands, review, modes, status), with a live stream of each run.

Example:
    >>> import tempfile
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(tempfile.mkdtemp(), token=Token(value="t" * 32, source="test"))
    >>> TestClient(app).get("/api/v1/runs").json()
    []
"""

from autopilot.service.app import API_PREFIX, create_app
from autopilot.service.auth import Token, load_token
from autopilot.service.runs import Fleet, discover
from autopilot.service.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Serving,
    make_server,
    serve_in_thread,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Fleet",
    "Token",
    "create_app",
    "discover",
    "load_token",
    "make_server",
    "serve_in_thread",
    "Serving",
]
