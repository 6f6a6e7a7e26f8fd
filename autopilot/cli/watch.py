"""``autopilot watch``: run the autopilot beside a training run until the training ends."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from autopilot.cli._common import CliError, run_dir_of
from autopilot.config import AI_MODES, load_settings
from autopilot.errors import AutopilotError
from kernel.jsonl import JsonlTail


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch the run and print each decision and measured effect as it is recorded."""
    from autopilot.watch import Autopilot, quiet_gc

    run_dir = run_dir_of(args)
    try:
        settings = load_settings(args.config, run_dir)
        mode = args.mode or settings.mode
        pilot = Autopilot(run_dir, mode=mode, settings=settings)
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    logging.basicConfig(level=logging.WARNING, format="autopilot: %(levelname)s %(message)s")
    print(header(run_dir, mode, settings))
    printer = DecisionPrinter(run_dir)
    quiet_gc()
    with pilot:
        if args.once:
            pilot.tick()
        else:
            pilot.run(until_ended=not args.forever, on_tick=lambda _: printer.print_new())
    printer.print_new()
    return 0


def header(run_dir: Path, mode: str, settings: Any) -> str:
    """One line saying what the autopilot will do, and whether the LLM is usable."""
    line = f"autopilot watching {run_dir} in mode {mode}"
    if mode in AI_MODES:
        if settings.api_key():
            where = settings.llm.base_url or "the provider's default URL"
            line += f" (LLM {settings.llm.model} at {where})"
        else:
            line += f" (no key in ${settings.llm.api_key_env}: every decision falls back to rules)"
    return line


class DecisionPrinter:
    """Prints the records appended to ``autopilot/decisions.jsonl`` since the last call."""

    def __init__(self, run_dir: Path) -> None:
        self._tail = JsonlTail(run_dir / "autopilot" / "decisions.jsonl")

    def print_new(self) -> None:
        from autopilot.cli.decisions import brief_lines

        for _, text in self._tail.read_new():
            for line in brief_lines(text):
                print(line, flush=True)
