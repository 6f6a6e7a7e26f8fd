"""Run directories for autopilot tests: a ``kernel.json`` with chosen knobs, ledger rows,
and proposals, written with the kernel's own models (no training process needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from autopilot.proposals import Action, Proposal
from kernel import KnobSpec, KnobValue
from kernel.ledger import Ledger
from kernel.state import FreezeMode, KernelState, write_kernel_state


def spec(name: str, value: KnobValue, **kw: Any) -> KnobSpec:
    """A published knob; ``kind`` follows the value (bool or float)."""
    kw.setdefault("kind", "bool" if isinstance(value, bool) else "float")
    return KnobSpec(name=name, value=value, **kw)


def default_knobs() -> list[KnobSpec]:
    """lr, weight_decay, grad_clip (off) and a loss-term toggle, as a small SGD run has."""
    return [
        spec("lr", 0.1, lo=1e-7, hi=10.0, scale="log"),
        spec("weight_decay", 0.01, lo=0.0, hi=1.0),
        spec("grad_clip", 0.0, lo=0.0, hi=1e4),
        spec("loss.extra", True),
    ]


def write_run(
    run_dir: Path,
    *,
    step: int | None = 1000,
    knobs: list[KnobSpec] | None = None,
    freeze: FreezeMode = "off",
) -> KernelState:
    """Write a ``kernel.json`` as a live kernel at ``step`` would; return the state."""
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    state = KernelState(
        pid=os.getpid(),
        host="test",
        started_at=now,
        heartbeat=now,
        last_step=step,
        freeze=freeze,
        knobs=default_knobs() if knobs is None else knobs,
    )
    write_kernel_state(run_dir, state)
    return state


def record_change(
    run_dir: Path,
    *,
    step: int,
    knob: str,
    source: str = "human",
    decision: str = "applied",
    command_id: str | None = None,
    after: KnobValue | None = None,
) -> None:
    """Append one ``set`` row to the run's ledger, as the kernel does when it handles one."""
    Ledger(run_dir).record(
        step=step,
        decision=decision,  # type: ignore[arg-type]
        command_id=command_id or f"{source}-{knob}-{step}",
        source=source,
        op="set",
        knob=knob,
        after=after,
    )


def proposal(*actions: Action, proposer: str = "ai", confidence: float = 0.9) -> Proposal:
    return Proposal(
        proposer=proposer,  # type: ignore[arg-type]
        diagnosis="val/loss plateaued",
        actions=list(actions),
        confidence=confidence,
    )


def mul(knob: str, factor: float, reason: str = "") -> Action:
    return Action(knob=knob, multiplier=factor, reason=reason)


def val(knob: str, value: KnobValue, reason: str = "") -> Action:
    return Action(knob=knob, value=value, reason=reason)
