"""The training process of ``autopilot.launch``: import ``module:fn`` and call it with the
run directory.

``python -m autopilot.launch_child module:fn --dir RUN [--max-steps N]`` calls
``fn(run_dir: str, max_steps: int | None)``; the function builds its own
``kernel.Kernel(run_dir, ...)`` and trains. The exit code is 0 when it returns, 1 when it
raises (its traceback on stderr), 2 when ``module:fn`` cannot be found. Only the user's
code and the kernel are imported here: never the autopilot's graph.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable
from typing import Any


def resolve(target: str) -> Callable[..., Any]:
    """The function ``module:fn`` names (``fn`` may be dotted: ``module:Class.method``).

    Raises:
        ValueError: the text is not ``module:fn``, or the module has no such callable.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"the training function must be given as module:fn, got {target!r}")
    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part, None)
    if not callable(found):
        raise ValueError(f"{module_name} has no callable {attr!r} (module:fn names a function)")
    return found  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autopilot.launch_child")
    parser.add_argument("target", metavar="module:fn")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        fn = resolve(args.target)
    except (ImportError, ValueError) as exc:
        print(f"autopilot launch: {exc}", file=sys.stderr)
        return 2
    try:
        fn(args.dir, args.max_steps)
    except BaseException:  # the parent reads the exit code; the traceback is for the user
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
