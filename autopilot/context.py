"""What the policies see, assembled from the tick state and the run directory.

Knob values and bounds are read from ``kernel.json`` at the moment of the decision (never a
remembered guess), and the config's ``[bounds]`` narrow the kernel's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.config import Settings
from autopilot.diagnoses import Diagnosis
from autopilot.guards import bounded_spec
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.summary import metric_mode, render_table
from kernel import KernelState, KnobSpec, LedgerRow, read_kernel_state

if TYPE_CHECKING:
    from autopilot.decisions import DecisionRecord
    from autopilot.nodes import Nodes


def key_metric_of(
    run_dir: Path, settings: Settings, windows: dict[str, Any]
) -> tuple[str, str] | None:
    """The key metric and its direction: the config's, else the kernel's, else ``val/loss``,
    else the first loss logged. ``None`` until the chosen metric has been logged."""
    state = read_kernel_state(run_dir)
    name = settings.detectors.key_metric or (state.key_metric if state else None)
    if name is None:
        name = "val/loss" if "val/loss" in windows else _first_loss(windows)
    if name is None or name not in windows:
        return None
    return name, _mode(name, settings, state)


def _first_loss(windows: dict[str, Any]) -> str | None:
    return next((n for n in sorted(windows) if "loss" in n), None)


def _mode(name: str, settings: Settings, state: KernelState | None) -> str:
    if settings.detectors.key_mode:
        return settings.detectors.key_mode
    if state is not None and state.key_metric == name and state.key_metric_mode:
        return state.key_metric_mode
    return metric_mode(name)


def knobs_with_bounds(state: KernelState | None, settings: Settings) -> dict[str, KnobSpec]:
    """The run's knobs, with the bounds the guards judge them under (``knob_bounds``)."""
    return {spec.name: bounded_spec(spec, settings) for spec in (state.knobs if state else [])}


def build_context(nodes: Nodes, state: dict[str, Any], *, table: bool = True) -> PolicyContext:
    """The policy context of the current tick; ``table=False`` leaves out the summary table,
    which only the LLM reads (the rule policy saves rendering it)."""
    return PolicyContext(
        step=state["step"],
        mode=nodes.mode,
        key_metric=state["key_metric"],
        key_mode=state["key_mode"],
        diagnoses=[Diagnosis.model_validate(d) for d in state.get("diagnoses", [])],
        knobs=knobs_with_bounds(read_kernel_state(nodes.run_dir), nodes.settings),
        summary_table=render_table(nodes.summary_of(state)) if table else "",
        recent_changes=[LedgerRow.model_validate(r) for r in state.get("changes", [])],
        past_decisions=[PastDecision(**p) for p in state.get("past", [])],
        memory_notes=nodes.memory_notes,
    )


def past_entry(record: DecisionRecord) -> dict[str, Any]:
    """A decision as the prompt's "recent decisions" remember it (PastDecision fields)."""
    allowed = [v for v in record.verdicts if v.status != "rejected"]
    return {
        "step": record.step,
        "diagnosis": "; ".join(d.message for d in record.diagnoses)[:300],
        "actions": [f"{v.knob}={v.value} ({record.route})" for v in allowed],
        "effect": None,
        "decision_id": record.id,
    }
