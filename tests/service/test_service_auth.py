"""The service's token: generated once with mode 0600, or given; refused when weak or
readable by others; required beforehand beyond loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from autopilot.errors import AutopilotError
from autopilot.service import make_server
from autopilot.service.auth import ENV_TOKEN, is_loopback, load_token


def test_a_token_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "service.token"
    first = load_token(path, create=True, env={})
    assert first.generated and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_token(path, create=True, env={})
    assert not again.generated and again.value == first.value


def test_the_environment_wins(tmp_path: Path) -> None:
    token = load_token(tmp_path / "t", create=True, env={ENV_TOKEN: "x" * 20})
    assert token.value == "x" * 20 and not (tmp_path / "t").exists()


def test_a_weak_or_shared_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AutopilotError, match="at least 16 characters, got 5"):
        load_token(tmp_path / "t", create=True, env={ENV_TOKEN: "short"})
    path = tmp_path / "t"
    path.write_text("y" * 40)
    path.chmod(0o644)
    with pytest.raises(AutopilotError, match="may be read by others .* chmod 600"):
        load_token(path, create=True, env={})


def test_beyond_loopback_the_server_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(AutopilotError, match="no token: a server on an address other than"):
        make_server(tmp_path, host="0.0.0.0", token_file=tmp_path / "none", env={})
    assert not (tmp_path / "none").exists()
    given = make_server(tmp_path, host="0.0.0.0", env={ENV_TOKEN: "z" * 32})
    assert given.reads_need_token and given.token.value == "z" * 32


def test_a_root_that_is_no_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AutopilotError, match="is not a directory"):
        make_server(tmp_path / "missing", env={ENV_TOKEN: "z" * 32})


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.3.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.5", False), ("::", False), ("example.org", False)],
)  # fmt: skip
def test_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local
