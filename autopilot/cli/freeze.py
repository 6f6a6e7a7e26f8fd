"""``autopilot freeze`` and ``autopilot recipe export``: lock a run's knobs, or replay a
recorded knob history in another run."""

from __future__ import annotations

import argparse

from autopilot.cli._common import run_dir_of
from kernel import export_recipe, read_kernel_state, write_freeze, write_recipe

_MEANING = {
    "off": "outside knob changes are applied again",
    "prod": "outside knob changes are now ignored (and recorded as ignored_freeze); stop, "
    "pause, resume and checkpoint still work",
    "replay": "the recipe's changes are applied at their steps; other knob changes are ignored",
}


def cmd_freeze(args: argparse.Namespace) -> int:
    """Write ``freeze.json``; the kernel picks it up within about a second."""
    run_dir = run_dir_of(args)
    state = write_freeze(run_dir, args.mode, args.recipe)
    recipe = f" from {state.recipe}" if state.recipe else ""
    print(f"freeze {state.mode}{recipe}: {_MEANING[state.mode]}")
    if read_kernel_state(run_dir) is None:
        print(f"(no kernel has started in {run_dir} yet; it takes effect when one does)")
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    """Write the run's applied knob changes as a recipe file (``recipe export``)."""
    run_dir = run_dir_of(args)
    entries = export_recipe(run_dir)
    write_recipe(entries, args.out)
    note = "" if entries else " (the ledger has no applied knob change)"
    print(
        f"wrote {len(entries)} recipe entr{'y' if len(entries) == 1 else 'ies'} to {args.out}{note}"
    )
    if entries:
        print(
            f"replay it in a new run with: autopilot --dir NEW_RUN freeze replay "
            f"--recipe {args.out}"
        )
    return 0
