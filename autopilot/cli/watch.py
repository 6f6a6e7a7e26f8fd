"""``autopilot watch``: run the autopilot beside a training run until the training ends.

A watcher is often started before the training: it waits (and says so) for the run
directory and the kernel's ``kernel.json``. On a restart it prints only the decisions
recorded from then on, after one line counting the earlier ones.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.cli._common import CliError, run_dir_of
from autopilot.config import AI_MODES, check_bounds, load_settings
from autopilot.decisions import DECISIONS_FILE
from autopilot.errors import AutopilotError
from kernel import KernelState, read_kernel_state
from kernel.jsonl import JsonlTail
from kernel.state import AUTOPILOT_DIR, STATE_FILE


def _print(line: str) -> None:
    print(line, flush=True)  # a pipe or a log file sees each line as it happens


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch the run and print each decision and measured effect as it is recorded."""
    from autopilot.quiet_gc import quiet_gc
    from autopilot.watch import Autopilot

    run_dir = run_dir_of(args, must_exist=False)
    # before the autopilot starts: a refused checkpoint is reported as it is opened
    logging.basicConfig(level=logging.WARNING, format="autopilot: %(levelname)s %(message)s")
    try:
        settings = load_settings(args.config, run_dir)
        if args.tune:
            tune = settings.tune.model_copy(update={"enabled": True})
            settings = settings.model_copy(update={"tune": tune})
        mode = args.mode or settings.mode
        kernel = wait_for_kernel(run_dir, settings.cadence.poll_interval_s)
        check_bounds(settings, kernel)
        pilot = Autopilot(run_dir, mode=mode, settings=settings)
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    _print(header(run_dir, mode, settings))
    printer = DecisionPrinter(run_dir)
    quiet_gc()
    with pilot:
        if args.once:
            pilot.tick()
        else:
            try:
                pilot.run(until_ended=not args.forever, on_tick=lambda _: printer.print_new())
            except AutopilotError as exc:  # the run directory was deleted under it
                printer.print_new()
                raise CliError(str(exc), code=1) from None
    printer.print_new()
    return 0


def wait_for_kernel(
    run_dir: Path,
    poll_s: float,
    *,
    say: Callable[[str], None] = _print,
    stop: threading.Event | None = None,
) -> KernelState | None:
    """Wait until the training has created ``run_dir`` and its ``kernel.json``; the state.

    Says once what it waits for (and again when the directory appears but the kernel has
    not published yet). ``None`` only when ``stop`` is set first.
    """
    stop = stop or threading.Event()
    said = ""
    while not stop.is_set():
        if (run_dir / STATE_FILE).is_file():
            state = read_kernel_state(run_dir)
            if state is not None:
                return state
        what = _waiting_for(run_dir)
        if what != said:
            say(what)
            said = what
        stop.wait(poll_s)
    return None


def _waiting_for(run_dir: Path) -> str:
    if not run_dir.is_dir():
        return (
            f"waiting for the training to create {run_dir} (start it with "
            f"Kernel({str(run_dir)!r}, ...); Ctrl-C to stop)"
        )
    return f"waiting for the kernel to start in {run_dir} (no {STATE_FILE} yet; Ctrl-C to stop)"


def header(run_dir: Path, mode: str, settings: Any) -> str:
    """One line saying what the autopilot will do, and whether the LLM is usable."""
    line = f"autopilot watching {run_dir} in mode {mode}"
    if mode in AI_MODES:
        if settings.api_key():
            where = settings.llm.base_url or "the provider's default URL"
            line += f" (LLM {settings.llm.model} at {where})"
        else:
            line += f" (no key in ${settings.llm.api_key_env}: every decision falls back to rules)"
    if settings.tune.enabled:
        tuned = "the online tuner proposes" if mode in ("suggest", "auto") else "tuner ignored"
        line += f"; {tuned} (tune: {', '.join(settings.tune.knobs)})"
    return line


class DecisionPrinter:
    """Prints the records appended to ``autopilot/decisions.jsonl`` after it was created.

    The records already there (a restarted watcher's history) are counted in one line, not
    printed again: ``autopilot decisions`` shows them.
    """

    def __init__(self, run_dir: Path, *, say: Callable[[str], None] = _print) -> None:
        path = run_dir / AUTOPILOT_DIR / DECISIONS_FILE
        self._say = say
        history = JsonlTail(path)
        earlier = sum(1 for _ in history.read_new())
        self._tail = JsonlTail(path, offset=history.offset)
        if earlier:
            say(
                f"{earlier} earlier records (decisions and effects) not shown again: "
                f"autopilot --dir {run_dir} decisions"
            )

    def print_new(self) -> None:
        from autopilot.cli.decisions import brief_lines

        for _, text in self._tail.read_new():
            for line in brief_lines(text):
                self._say(line)
