"""``autopilot doctor``: check the config, the run, its key metric, the memory store and the
LLM (one real call) before the first decision (``autopilot.doctor``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autopilot.cli._common import ENV_DIR, CliError
from autopilot.config import load_config
from autopilot.doctor import run_checks
from autopilot.errors import AutopilotError

MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print each check; exit 1 when one failed."""
    name = getattr(args, "dir", None) or os.environ.get(ENV_DIR)
    run_dir = Path(name) if name else None
    try:
        loaded = load_config(
            getattr(args, "config", None), run_dir if run_dir and run_dir.is_dir() else None
        )
    except AutopilotError as exc:
        raise CliError(f"config: {exc}", code=1) from None
    checks = run_checks(run_dir, loaded, call_llm=not args.no_call)
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{MARKS[check.status]}  {check.name:<{width}}  {check.detail}")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    return 0
