"""``autopilot launch module:fn``: train ``fn(run_dir, max_steps)`` in a child process
under an autopilot in this one (and with ``--serve`` the HTTP API), until it ends; Ctrl-C
sends ``stop``. The exit code is the training's."""

from __future__ import annotations

import argparse
import logging

from autopilot.cli._common import CliError, run_dir_of
from autopilot.errors import AutopilotError


def cmd_launch(args: argparse.Namespace) -> int:
    """Launch, print where the run is served, wait; the training's exit code."""
    from autopilot.launcher import launch

    logging.basicConfig(level=logging.WARNING, format="autopilot: %(levelname)s %(message)s")
    run_dir = run_dir_of(args, must_exist=False)
    try:
        h = launch(
            args.target,
            run_dir=run_dir,
            mode=args.mode,
            serve=args.serve,
            max_steps=args.max_steps,
            config=args.config,
        )
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    if h.url is not None:
        print(f"serving {run_dir} at {h.url}/api/v1 (writes need the token in your state dir)")
    print(f"training {args.target} in {run_dir} (pid {h.process.pid}), autopilot {args.mode}")
    try:
        code = h.wait()
    except KeyboardInterrupt:
        print("stopping the training at its next step", flush=True)
        code = h.stop()
    print(f"training exited with {code}")
    return code if code is not None else 1
