"""The autopilot's part of ``autopilot status``: is one watching, what it last decided, what
waits for review, and what the LLM has cost this run."""

from __future__ import annotations

from pathlib import Path

from autopilot._watch_lock import LOCK_FILE, holder
from autopilot.cli._format import table
from kernel.state import AUTOPILOT_DIR


def autopilot_lines(run_dir: Path) -> list[str]:
    """Lines for the status page; a run never watched says how to start the autopilot."""
    state_dir = run_dir / AUTOPILOT_DIR
    if not state_dir.is_dir():
        return ["", f"autopilot: never ran here (start it: autopilot --dir {run_dir} watch)"]
    lines = ["", "autopilot", f"  watcher     {_watcher(state_dir)}"]
    lines += _last_decision(run_dir)
    lines += _reviews(run_dir)
    lines.append(f"  LLM spend   {_spend(run_dir)}")
    lines.append(f"  memory      {memory_line(run_dir).removeprefix('memory: ')}")
    lines.append(f"  tuner       {_tuner(run_dir)}")
    lines += _config(run_dir)
    return lines


def memory_line(run_dir: Path) -> str:
    """Where memory is and what it knows of this run's task (read only)."""
    from autopilot.config import load_config
    from autopilot.errors import AutopilotError
    from autopilot.remember import RunMemory
    from kernel import read_kernel_state

    try:
        memory = RunMemory(run_dir, load_config(None, run_dir).settings)
    except AutopilotError as exc:
        return f"unknown: the config cannot be read: {exc}"
    kernel = read_kernel_state(run_dir)
    if kernel is not None:
        memory.peek(kernel)
    line = memory.status()
    memory.close()
    return line


def _tuner(run_dir: Path) -> str:
    """The online tuner: off, or its task's study (trials, the best measured)."""
    from autopilot.config import load_config
    from autopilot.errors import AutopilotError
    from autopilot.policies.tune import status_line
    from kernel import read_kernel_state

    try:
        settings = load_config(None, run_dir).settings
    except AutopilotError as exc:
        return f"unknown: the config cannot be read: {exc}"
    try:
        return status_line(run_dir, settings, read_kernel_state(run_dir))
    except Exception as exc:  # a status page shows what it can
        return f"unknown: the study cannot be read: {exc}"


def _config(run_dir: Path) -> list[str]:
    """Which file set which setting (a run directory's file may only tighten them)."""
    from autopilot.config import load_config
    from autopilot.errors import AutopilotError

    try:
        described = load_config(None, run_dir).describe()
    except AutopilotError as exc:
        described = [f"cannot be read: {exc}"]
    return [f"  config      {described[0]}", *(f"              {line}" for line in described[1:])]


def _watcher(state_dir: Path) -> str:
    # the lock says whether it lives: a pid outlives a kill -9 as a zombie, or is reused
    found = holder(state_dir / LOCK_FILE)
    if found is None:
        return "not running"
    who = f"pid {found.pid}, mode {found.mode or '?'}"
    if found.alive is None:
        return f"on {found.host} ({who}), per its lock file; check it there"
    return f"running ({who})" if found.alive else f"not running (last: {who})"


def _last_decision(run_dir: Path) -> list[str]:
    from autopilot.decisions import DecisionLog

    views = DecisionLog(run_dir).read()
    if not views:
        return ["  decisions   none yet"]
    r = views[-1].record
    kinds = ", ".join(d.kind for d in r.diagnoses) or "-"
    line = f"  decisions   {len(views)}; last at step {r.step}: {kinds} -> {r.route}"
    line += f" via {r.proposer or '-'}"
    fallbacks = sum(1 for v in views if v.record.fallback_reason)
    lines = [line]
    if r.fallback_reason:
        lines.append(f"  fallback    the LLM was not used: {r.fallback_reason}")
    elif fallbacks:
        lines.append(f"  fallbacks   {fallbacks} decisions used the rules instead of the LLM")
    return lines


def _reviews(run_dir: Path) -> list[str]:
    from autopilot.review import ReviewQueue

    pending = [i for i in ReviewQueue(run_dir).items() if i.status == "pending"]
    if not pending:
        return ["  review      nothing pending"]
    rows = [(i.id, str(i.step), i.proposal.diagnosis) for i in pending[-5:]]
    return [
        f"  review      {len(pending)} pending (autopilot --dir {run_dir} review list)",
        *table(("id", "step", "diagnosis"), rows, indent="    ", wrap_last=60),
    ]


def _spend(run_dir: Path) -> str:
    from autopilot.budget import Budget
    from autopilot.config import load_settings
    from autopilot.errors import AutopilotError

    try:
        settings = load_settings(None, run_dir)
        budget = Budget(run_dir, settings)
        spent = budget.spent_run()
    except (AutopilotError, OSError) as exc:
        return f"unknown ({exc})"
    return f"${spent:.4f} of ${settings.budget.per_run_usd:g} for this run"
