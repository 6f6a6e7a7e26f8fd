"""``autopilot serve``: the autopilot of every run under a root, and the HTTP API, from one
process; ``autopilot mode``: set the mode ``serve`` ticks a run in.

``serve`` prints a generated token once (it is kept in the user's state directory with mode
0600); on an address other than loopback it refuses to start without a token given
beforehand.
"""

from __future__ import annotations

import argparse
import logging

from autopilot.cli._common import CliError, run_dir_of
from autopilot.errors import AutopilotError


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the runs under ``--runs`` until interrupted."""
    from autopilot.quiet_gc import quiet_gc
    from autopilot.service import make_server

    logging.basicConfig(level=logging.WARNING, format="autopilot: %(levelname)s %(message)s")
    if args.workers == 1:  # the runs tick here (workers tune their own collector)
        quiet_gc()  # as in `autopilot watch`: a full collection over many runs stalls ticks
    try:
        prepared = make_server(
            args.runs,
            host=args.host,
            port=args.port,
            default_mode=args.mode,
            config=args.config,
            workers=args.workers,
            threads=args.threads,
        )
    except AutopilotError as exc:
        raise CliError(str(exc)) from None
    token = prepared.token
    if token.generated:
        print(f"token (printed once; kept in {token.source}, mode 0600): {token.value}")
    else:
        print(f"token: the one in {token.source}")
    reads = "reads and writes" if prepared.reads_need_token else "writes"
    print(
        f"autopilot serving the runs under {args.runs} at http://{args.host}:{args.port}"
        f"/api/v1 ({reads} need `Authorization: Bearer TOKEN`; the schema: /docs)",
        flush=True,
    )
    print(
        f"the dashboard: http://{args.host}:{args.port}/ (paste the token into its top bar)",
        flush=True,
    )
    prepared.server.run()
    return 0


def cmd_mode(args: argparse.Namespace) -> int:
    """Print the run's mode, or set it (``unset``: ``serve`` stops ticking the run)."""
    from autopilot.run_mode import resolve_mode, write_run_mode

    run_dir = run_dir_of(args)
    if args.mode is not None:
        try:
            write_run_mode(run_dir, None if args.mode == "unset" else args.mode, set_by="cli")
        except AutopilotError as exc:
            raise CliError(str(exc)) from None
    found = resolve_mode(run_dir)
    if found.mode is None:
        print(f"mode of {run_dir}: unset (autopilot serve lists the run, ticks it not)")
    else:
        print(f"mode of {run_dir}: {found.mode} (from {found.source})")
    return 0
