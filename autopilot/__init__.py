"""The training autopilot: reads a run's metrics, diagnoses it and proposes bounded changes
that the kernel applies inside the training process.

Subpackages are imported on demand: ``autopilot.cli`` (the ``autopilot`` command) must not
pull in the agent graph to print its help or queue a command.
"""

__all__: list[str] = []
