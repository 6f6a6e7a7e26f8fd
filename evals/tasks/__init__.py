"""The closed-loop benchmark's task suite: small real trainings that start from a good or a
bad configuration of their knobs, and the function that trains one under a ``Kernel``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from evals.tasks import TASKS, train_task
    >>> task = TASKS["digits/lr_high"]
    >>> outcome = train_task(task, seed=0, run_dir=Path(tempfile.mkdtemp()), steps=40)
    >>> outcome.steps
    [20, 40]
"""

from evals.tasks.spec import LoopBug, Setup, TaskConfig, TrainOutcome
from evals.tasks.suite import SETUPS, TASKS
from evals.tasks.train import KEY_METRIC, train_task

__all__ = [
    "KEY_METRIC",
    "SETUPS",
    "TASKS",
    "LoopBug",
    "Setup",
    "TaskConfig",
    "TrainOutcome",
    "train_task",
]
