"""The live stream of one run, as Server-Sent Events: each line appended to its metrics, its
ledger, its decision log or its review queue becomes an event named ``metrics``,
``ledger``, ``decision`` or ``review`` whose data is that line (one JSON document).

The files are followed with ``JsonlTail`` (one ``stat`` each per poll; rotations and
torn last lines handled as everywhere else), from their ends at connection time unless the
client asks ``since=start``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from autopilot.decisions import DECISIONS_FILE
from autopilot.review import REVIEW_FILE
from kernel.jsonl import JsonlTail
from kernel.ledger import LEDGER_FILE
from kernel.metrics import METRICS_FILE
from kernel.state import AUTOPILOT_DIR

EventName = Literal["metrics", "ledger", "decision", "review"]
FILES: dict[EventName, str] = {
    "metrics": METRICS_FILE,
    "ledger": LEDGER_FILE,
    "decision": f"{AUTOPILOT_DIR}/{DECISIONS_FILE}",
    "review": f"{AUTOPILOT_DIR}/{REVIEW_FILE}",
}


def _tails(run_dir: Path, since: Literal["now", "start"]) -> dict[EventName, JsonlTail]:
    tails = {}
    for name, relative in FILES.items():
        path = run_dir / relative
        size = path.stat().st_size if since == "now" and path.is_file() else 0
        tails[name] = JsonlTail(path, offset=size)
    return tails


async def events(
    run_dir: Path,
    *,
    since: Literal["now", "start"] = "now",
    poll_s: float = 0.25,
    heartbeat_s: float = 15.0,
) -> AsyncIterator[dict[str, str]]:
    """The run's events as they are appended, for ``EventSourceResponse``; a ``ping``
    comment-like event every ``heartbeat_s`` keeps proxies from closing an idle stream."""
    tails = _tails(run_dir, since)
    idle = 0.0
    while True:
        sent = False
        for name, tail in tails.items():
            if not tail.changed():
                continue
            for offset, text in await asyncio.to_thread(tail.read_new):
                sent = True
                yield {"event": name, "id": f"{name}:{offset}", "data": text}
        idle = 0.0 if sent else idle + poll_s
        if idle >= heartbeat_s:
            idle = 0.0
            yield {"event": "ping", "data": "{}"}
        await asyncio.sleep(poll_s)
