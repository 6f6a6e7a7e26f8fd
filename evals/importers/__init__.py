"""Importers: metrics logged by other tools, written as recorded runs (see ``evals.runs``).

``import_tensorboard`` needs the optional ``tensorboard`` package, imported on first use.
"""

from evals.importers.csv import import_csv
from evals.importers.huggingface import import_trainer_state, trainer_state_path
from evals.importers.tensorboard import import_tensorboard

__all__ = ["import_csv", "import_tensorboard", "import_trainer_state", "trainer_state_path"]
