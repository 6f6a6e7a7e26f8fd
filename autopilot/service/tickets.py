"""Stream tickets: how a browser's ``EventSource``, which cannot send an ``Authorization``
header, opens a run's stream where reads need the token.

The page holds the token (typed once, kept in ``sessionStorage``) and sends it as a bearer
header with every request. For the stream it first asks ``POST /api/v1/runs/{id}/stream-ticket``
(bearer) for a ticket: the run id and an expiry, signed with HMAC-SHA256 keyed by the token.
The stream accepts ``?ticket=`` for that run until the expiry. So the token itself never
appears in a URL (URLs end up in logs and browser history), and a leaked ticket opens one
run's stream, read only, for a minute.

Example:
    >>> from autopilot.service.auth import Token
    >>> token = Token(value="t" * 32, source="test")
    >>> ticket = issue(token, "exp1", now=100.0)
    >>> valid(token, "exp1", ticket, now=130.0), valid(token, "exp2", ticket, now=130.0)
    (True, False)
    >>> valid(token, "exp1", ticket, now=200.0)
    False
"""

from __future__ import annotations

import hashlib
import hmac
import time

from autopilot.service.auth import Token

TICKET_TTL_S = 60.0


def _signature(token: Token, run_id: str, expires: int) -> str:
    message = f"stream|{run_id}|{expires}".encode()
    return hmac.new(token.value.encode(), message, hashlib.sha256).hexdigest()


def issue(token: Token, run_id: str, *, now: float | None = None) -> str:
    """A ticket for ``run_id``'s stream, valid for ``TICKET_TTL_S`` seconds."""
    expires = int((time.time() if now is None else now) + TICKET_TTL_S)
    return f"{expires}.{_signature(token, run_id, expires)}"


def valid(token: Token, run_id: str, ticket: str, *, now: float | None = None) -> bool:
    """Whether ``ticket`` was issued for ``run_id`` under ``token`` and has not expired."""
    expires_text, _, signature = ticket.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature, _signature(token, run_id, expires))
