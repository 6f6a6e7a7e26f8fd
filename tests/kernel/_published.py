"""What a test reads back from a run directory's ``kernel.json``, failing clearly when it is
not there."""

from __future__ import annotations

from pathlib import Path

import torch

from kernel import KernelState, KnobValue, read_kernel_state

TRAIN_LOOP = Path(__file__).with_name("_train_loop.py")


def published(run_dir: Path) -> KernelState:
    """The run's kernel.json; the test fails when there is none."""
    state = read_kernel_state(run_dir)
    assert state is not None, f"no kernel.json in {run_dir}"
    return state


def knob_value(state: KernelState, knob: str) -> KnobValue:
    spec = state.knob(knob)
    assert spec is not None, f"kernel.json publishes no knob {knob!r}"
    return spec.value


def sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
