"""``autopilot reset``: make a run directory ready for its next run.

Between runs, a directory may still hold what was meant for the run that ended: commands
queued after it ended, pending proposals in the review queue, the autopilot's graph state
(windows, baselines, cooldowns). ``reset`` expires the commands (ledger rows with the
reason), rejects the pending proposals (with the reason) and deletes the graph checkpoint.
History stays readable: the ledger, the decisions, the review log and the metrics.

It refuses while a training process or a watcher is live: they own those files then.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autopilot._watch_lock import LOCK_FILE, holder
from autopilot.cli._common import CliError, run_dir_of
from autopilot.review import ReviewQueue
from kernel.lifecycle import clear_queued
from kernel.state import AUTOPILOT_DIR, read_kernel_state

WHY = "cleared by `autopilot reset`"
GRAPH_FILES = (
    "graph.sqlite",
    "graph.sqlite-wal",
    "graph.sqlite-shm",
    "graph.json",
    "graph.sqlite.refused",
)
"""The autopilot's graph state: the LangGraph checkpoints, which thread is current, and a
checkpoint the watcher refused (kept aside for inspection until a reset)."""


def cmd_reset(args: argparse.Namespace) -> int:
    run_dir = run_dir_of(args)
    _refuse_if_live(run_dir)
    expired = clear_queued(run_dir, WHY)
    rejected = _clear_review(run_dir)
    removed = _remove_graph_state(run_dir / AUTOPILOT_DIR)
    print(
        f"reset {run_dir}: {len(expired)} queued command(s) expired, {rejected} pending "
        f"proposal(s) rejected, graph state {'removed' if removed else 'absent'}"
    )
    print("kept: the ledger, decisions, review history and metrics")
    return 0


def _refuse_if_live(run_dir: Path) -> None:
    state = read_kernel_state(run_dir)
    if state is not None and not state.has_ended():
        raise CliError(
            f"a training process (pid {state.pid} on {state.host}) is live in {run_dir}; "
            f"reset is for a directory between runs: stop it first "
            f"(`autopilot --dir {run_dir} stop`)"
        )
    watcher = holder(run_dir / AUTOPILOT_DIR / LOCK_FILE)
    if watcher is not None and watcher.alive is True:
        raise CliError(
            f"an autopilot (pid {watcher.pid}, mode {watcher.mode}) is watching {run_dir}; "
            "stop it first (Ctrl-C in its terminal), then reset"
        )
    if watcher is not None and watcher.alive is None:
        raise CliError(
            f"an autopilot on {watcher.host} (pid {watcher.pid}) last watched {run_dir}, "
            "and whether it still runs cannot be told from here; stop it there, then reset "
            "from that host"
        )


def _clear_review(run_dir: Path) -> int:
    queue = ReviewQueue(run_dir)
    pending = [item for item in queue.items() if item.status == "pending"]
    for item in pending:
        queue.reject(item.id, why=WHY)
    return len(pending)


def _remove_graph_state(state_dir: Path) -> bool:
    removed = False
    for name in GRAPH_FILES:
        try:
            (state_dir / name).unlink()
            removed = True
        except FileNotFoundError:
            continue
    return removed
