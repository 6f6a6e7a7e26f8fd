"""The training kernel: lives inside the training process, applies live commands at safe
step boundaries and records every change. It imports nothing from the other packages of
this project, and nothing heavier than torch and pydantic.

``Kernel`` (which needs torch) is imported on first use, so that tools reading a run
directory (the CLI, the autopilot) start without loading torch.
"""

from typing import TYPE_CHECKING, Any

from kernel.commands import (
    Command,
    Intent,
    KnobValue,
    append_command,
    format_value,
    new_command_id,
    parse_command_line,
)
from kernel.errors import CommandError, KernelError, KnobError, RunDirError
from kernel.freeze import (
    FreezeState,
    RecipeEntry,
    export_recipe,
    load_recipe,
    read_freeze,
    write_freeze,
    write_recipe,
)
from kernel.knobs import FnKnob, Knob, KnobSpec
from kernel.ledger import LedgerRow, read_ledger
from kernel.metric_names import metric_mode
from kernel.metrics import MetricRecord
from kernel.state import KernelState, SnapshotInfo, TaskInfo, read_kernel_state

if TYPE_CHECKING:
    from kernel._kernel import Kernel, KernelSettings

_LAZY = {"Kernel", "KernelSettings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kernel import _kernel

        return getattr(_kernel, name)
    raise AttributeError(f"module 'kernel' has no attribute {name!r}")


__all__ = [
    "Command",
    "CommandError",
    "FnKnob",
    "FreezeState",
    "Intent",
    "Kernel",
    "KernelError",
    "KernelSettings",
    "KernelState",
    "SnapshotInfo",
    "TaskInfo",
    "Knob",
    "KnobError",
    "KnobSpec",
    "KnobValue",
    "LedgerRow",
    "MetricRecord",
    "RecipeEntry",
    "RunDirError",
    "append_command",
    "export_recipe",
    "format_value",
    "load_recipe",
    "metric_mode",
    "new_command_id",
    "parse_command_line",
    "read_freeze",
    "read_kernel_state",
    "read_ledger",
    "write_freeze",
    "write_recipe",
]
