"""The service's bearer token: where it comes from, and who must show it.

The token is ``$AUTOPILOT_SERVICE_TOKEN`` when set, else the one in the user's state
directory (``service.token``, mode 0600), generated on the first start on a loopback
address and printed once. Every write needs it; on any address but loopback every read
does too, and the server refuses to start without a token given beforehand (so that no one
exposes a server whose token they never saw).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> token = load_token(Path(tempfile.mkdtemp()) / "service.token", create=True, env={})
    >>> token.generated, len(token.value) >= 32
    (True, True)
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autopilot.config import state_home
from autopilot.errors import AutopilotError

ENV_TOKEN = "AUTOPILOT_SERVICE_TOKEN"
TOKEN_FILE = "service.token"
_MIN_LENGTH = 16


@dataclass(frozen=True, kw_only=True)
class Token:
    """The token, where it came from, and whether this start generated it."""

    value: str
    source: str
    generated: bool = False

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token (a comparison that takes the same time either way)."""
        return hmac.compare_digest(given.encode(), self.value.encode())


def token_path() -> Path:
    """``service.token`` in the user's state directory."""
    return state_home() / TOKEN_FILE


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(
    path: Path | None = None, *, create: bool, env: Mapping[str, str] | None = None
) -> Token:
    """The service's token: the environment's, else the file's, else (``create``) a new
    one written to the file with mode 0600.

    Raises:
        AutopilotError: no token and ``create`` is false, or a token shorter than 16
            characters, or a token file others may read.
    """
    env = os.environ if env is None else env
    path = path or token_path()
    if env.get(ENV_TOKEN):
        return Token(value=_checked(env[ENV_TOKEN], f"${ENV_TOKEN}"), source=f"${ENV_TOKEN}")
    if path.is_file():
        if path.stat().st_mode & 0o077:
            raise AutopilotError(
                f"{path} may be read by others (mode {path.stat().st_mode & 0o777:o}); "
                f"chmod 600 {path}, or delete it to have a new token generated"
            )
        return Token(value=_checked(path.read_text().strip(), str(path)), source=str(path))
    if not create:
        raise AutopilotError(
            f"no token: a server on an address other than loopback needs one beforehand; "
            f"set ${ENV_TOKEN}, or start once on 127.0.0.1 to have {path} generated"
        )
    return Token(value=_generate(path), source=str(path), generated=True)


def _checked(value: str, where: str) -> str:
    if len(value) < _MIN_LENGTH:
        raise AutopilotError(
            f"the token in {where} must be at least {_MIN_LENGTH} characters, got {len(value)}"
        )
    return value


def _generate(path: Path) -> str:
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
