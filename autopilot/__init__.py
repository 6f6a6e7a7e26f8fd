"""The training autopilot: reads a run's metrics, diagnoses it and proposes bounded changes
that the kernel applies inside the training process.

Subpackages are imported on demand: ``autopilot.cli`` (the ``autopilot`` command) must not
pull in the agent graph to print its help or queue a command. ``launch`` (training, its
autopilot and optionally the service, from Python) is imported on first use too.
"""

from typing import Any

__all__: list[str] = ["launch"]


def __getattr__(name: str) -> Any:
    if name == "launch":
        from autopilot.launcher import launch

        return launch
    raise AttributeError(f"module 'autopilot' has no attribute {name!r}")
