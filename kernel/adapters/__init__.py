"""Training-framework adapters: hook the kernel into a Lightning or Hugging Face loop.

The adapters are imported lazily, so ``import kernel.adapters`` never pulls in Lightning or
transformers; each name is resolved on first access and says what to install if its
framework is missing.

Example:
    ::

        import lightning.pytorch as pl
        from kernel.adapters import AutopilotCallback

        trainer = pl.Trainer(max_steps=1000, callbacks=[AutopilotCallback("runs/r1")])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.adapters.huggingface import AutopilotTrainerCallback
    from kernel.adapters.lightning import AutopilotCallback

__all__ = ["AutopilotCallback", "AutopilotTrainerCallback"]

# exported name -> (module, framework package, extra that installs it)
_EXPORTS: dict[str, tuple[str, str, str]] = {
    "AutopilotCallback": ("kernel.adapters.lightning", "lightning", "lightning"),
    "AutopilotTrainerCallback": ("kernel.adapters.huggingface", "transformers", "hf"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, framework, extra = _EXPORTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != framework:
            raise
        raise ImportError(
            f"{name} needs the {framework!r} package, which is not installed; "
            f"run: pip install 'train-autopilot[{extra}]'"
        ) from exc
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
