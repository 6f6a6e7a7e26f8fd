"""A throwaway PostgreSQL cluster for the tests: the real server, on loopback.

``postgres_url`` (session-scoped, registered in ``tests/conftest.py``) creates a cluster in a
temporary folder with Debian's binaries (``/usr/lib/postgresql/<N>/bin``, or those in
``$AUTOPILOT_PG_BIN``), listening only on 127.0.0.1 on a free port and on a unix socket in
that folder, and yields its superuser's URL; at the end of the session it stops the server
and deletes the folder. initdb and the server refuse to run as root: as root they run as
the ``postgres`` system user (``runuser``). Without the binaries, or when the server does
not start, every test that needs it fails with the reason (``.ci/run`` installs them).

``fresh_schema(url)`` gives each test its own schema (and a URL whose ``search_path`` is it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

PASSWORD = "autopilot-test"
START_TIMEOUT_S = 60.0
"""A safety net for a hung start, not an expectation: a start takes about a second."""


def bin_dir() -> Path:
    """Where initdb, postgres and pg_ctl are; fails the test with what to install."""
    given = os.environ.get("AUTOPILOT_PG_BIN")
    found = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major)
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    on_path = shutil.which("initdb")
    if on_path and not given:
        return Path(on_path).resolve().parent
    where = f"$AUTOPILOT_PG_BIN ({given})" if given else "/usr/lib/postgresql/*/bin or PATH"
    pytest.fail(
        "the PostgreSQL tests need the server's binaries (initdb, postgres, pg_ctl), not "
        f"found in {where}: apt-get install postgresql (.ci/run does), or set "
        "AUTOPILOT_PG_BIN to their folder",
        pytrace=False,
    )


def _major(folder: str) -> int:
    name = Path(folder).parent.name
    return int(name) if name.isdigit() else 0


class Cluster:
    """One PostgreSQL server in ``root`` (data, socket and log), as ``user`` when root."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin = root, bin_dir()
        self.data, self.log = root / "data", root / "server.log"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{quote(PASSWORD)}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if self.as_user:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chmod(pwfile, 0o644)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
            "--no-locale",
        )  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port),
            "unix_socket_directories": str(self.root), "fsync": "off",
            "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "50",
        }  # fmt: skip
        args = [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.as_user, str(self.bin / "postgres"), "-D", str(self.data), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(
                f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout}",
                pytrace=False,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text(errors="replace")[-2000:]
                    pytest.fail(
                        f"the test PostgreSQL server did not start ({exc}); its log:\n{log}",
                        pytrace=False,
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "stop"]
                + ["-m", "fast", "-w"],
                capture_output=True,
            )
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The superuser URL of a PostgreSQL server that lives as long as the test session."""
    bin_dir()  # without the binaries, fail before making a folder
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="autopilot-pg-")))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new empty schema on the server at ``url``; the URL that uses it; dropped after."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{url}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")
