"""What the policies see, assembled from the tick state and the run directory.

Knob values and bounds are read from ``kernel.json`` at the moment of the decision (never a
remembered guess), and the config's ``[bounds]`` narrow the kernel's.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.config import Settings
from autopilot.diagnoses import Diagnosis
from autopilot.guards import bounded_spec
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.state import tick_kernel
from autopilot.summary import render_table
from kernel import KernelState, KnobSpec, LedgerRow
from kernel.metric_names import MetricMode, infer_key_metric, metric_mode, split_role

if TYPE_CHECKING:
    from autopilot.decisions import DecisionRecord
    from autopilot.state import TickContext, TickState

logger = logging.getLogger(__name__)
_WARNED: set[tuple[str, str | None]] = set()


@dataclass(frozen=True, kw_only=True)
class KeyMetric:
    """The metric the autopilot judges the run by, and its direction.

    ``unlogged`` names a declared key metric (the config's or the kernel's) that was never
    logged within the grace period: ``name`` is then the fallback the autopilot uses.
    """

    name: str
    mode: MetricMode
    unlogged: str | None = None

    def warning(self, names: Iterable[str], step: int) -> str:
        """What to tell the user about the fallback (empty when there is none)."""
        if self.unlogged is None:
            return ""
        return (
            f"{unlogged_text(self.unlogged, names, step)}; judging the run by {self.name} "
            f"({self.mode}) instead"
        )


def declared_key_metric(kernel: KernelState | None, settings: Settings) -> str | None:
    """The key metric the config declares, else the one the kernel was given."""
    return settings.detectors.key_metric or (kernel.key_metric if kernel else None)


def key_metric_of(
    kernel: KernelState | None, settings: Settings, names: Collection[str], step: int
) -> KeyMetric | None:
    """The key metric at ``step`` of a run that has logged ``names``; ``None`` to wait.

    The declared one (:func:`declared_key_metric`) once it is logged. Otherwise, from
    ``detectors.key_metric_grace_steps`` on, the one ``infer_key_metric`` picks (marked
    ``unlogged`` when a declared one is missing); before that, only an inferred validation
    metric is taken at once, because a training loss may be waiting for a validation one.
    The replay picks its metric with this function too, so both judge the same rule.
    """
    declared = declared_key_metric(kernel, settings)
    if declared is not None and declared in names:
        return KeyMetric(name=declared, mode=_mode(declared, settings, kernel))
    inferred = infer_key_metric(names)
    if inferred is None:
        return None
    early = step < settings.detectors.key_metric_grace_steps
    if early and (declared is not None or split_role(inferred)[0] != "val"):
        return None
    if declared is not None:
        return KeyMetric(name=inferred, mode=metric_mode(inferred), unlogged=declared)
    return KeyMetric(name=inferred, mode=_mode(inferred, settings, kernel))


def key_metric_note(
    kernel: KernelState | None, settings: Settings, names: Collection[str], step: int
) -> str | None:
    """A warning when the key metric is not what was declared, or there is none, once the
    grace period is over; ``None`` while all is well (or still within the grace period)."""
    if step < settings.detectors.key_metric_grace_steps:
        return None
    declared = declared_key_metric(kernel, settings)
    key = key_metric_of(kernel, settings, names, step)
    if key is not None:
        return key.warning(names, step) or None
    if declared is not None:
        return f"{unlogged_text(declared, names, step)}; nothing to fall back to, no decisions"
    return (
        f"no key metric: none declared (Kernel(key_metric=...) or [detectors] key_metric) "
        f"and no loss or validation metric among {', '.join(sorted(names)) or 'nothing'}; "
        "no decisions"
    )


def warn_key_metric(
    run_dir: Path, kernel: KernelState | None, settings: Settings, names: Collection[str], step: int
) -> None:
    """Log :func:`key_metric_note` once per run directory and declared metric."""
    note = key_metric_note(kernel, settings, names, step)
    seen = (str(run_dir), declared_key_metric(kernel, settings))
    if note is not None and seen not in _WARNED:
        _WARNED.add(seen)
        logger.warning("%s", note)


def unlogged_text(declared: str, names: Iterable[str], step: int) -> str:
    """``key metric 'val/los' is not logged by step 600 (did you mean 'val/loss'?); the run
    logs ...``: Lightning's ``EarlyStopping`` names the metrics that are there."""
    logged = sorted(set(names))
    role = split_role(declared)[0]  # val/loss is no typo of train/loss
    same_role = [n for n in logged if split_role(n)[0] == role]
    close = difflib.get_close_matches(declared, same_role, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(logged[:20]) + (f" and {len(logged) - 20} more" if len(logged) > 20 else "")
    return (
        f"key metric {declared!r} is not logged by step {step}{hint}; the run logs "
        f"{shown or 'nothing yet'}"
    )


def _mode(name: str, settings: Settings, state: KernelState | None) -> MetricMode:
    if settings.detectors.key_mode:
        return settings.detectors.key_mode
    if state is not None and state.key_metric == name and state.key_metric_mode:
        return state.key_metric_mode
    return metric_mode(name)


def knobs_with_bounds(state: KernelState | None, settings: Settings) -> dict[str, KnobSpec]:
    """The run's knobs, with the bounds the guards judge them under (``knob_bounds``)."""
    return {spec.name: bounded_spec(spec, settings) for spec in (state.knobs if state else [])}


def build_context(ctx: TickContext, state: TickState, *, table: bool = True) -> PolicyContext:
    """The policy context of the current tick, from what its ``observe`` read (no file is
    read again); ``table=False`` leaves out the summary table, which only the LLM reads (the
    rule policy saves rendering it)."""
    diagnoses = [Diagnosis.model_validate(d) for d in state.get("diagnoses", [])]
    kernel = tick_kernel(state)
    phase = state["step"] / kernel.max_steps if kernel is not None and kernel.max_steps else None
    return PolicyContext(
        step=state["step"],
        mode=ctx.mode,
        key_metric=state["key_metric"],
        key_mode=state["key_mode"],
        diagnoses=diagnoses,
        knobs=knobs_with_bounds(kernel, ctx.settings),
        snapshots=list(kernel.snapshots) if kernel is not None else [],
        reflexes=[dict(r) for r in state.get("reflexes", [])],
        summary_table=render_table(ctx.summary(state)) if table else "",
        recent_changes=[LedgerRow.model_validate(r) for r in state.get("changes", [])],
        effects=dict(ctx.log.verdicts()),
        past_decisions=[PastDecision(**p) for p in state.get("past", [])],
        memory_notes=ctx.memory.notes() if table else "",
        lessons=ctx.memory.lessons(diagnoses[0].kind, phase) if diagnoses else [],
    )


def past_entry(record: DecisionRecord) -> dict[str, Any]:
    """A decision as the prompt's "recent decisions" remember it (PastDecision fields)."""
    allowed = [v for v in record.verdicts if v.status != "rejected"]
    return {
        "step": record.step,
        "diagnosis": "; ".join(d.message for d in record.diagnoses)[:300],
        "actions": [f"{_shown(v)} ({record.route})" for v in allowed],
        "effect": None,
        "decision_id": record.id,
    }


def _shown(verdict: Any) -> str:
    if verdict.requested.op == "rewind":
        return verdict.requested.describe()
    return f"{verdict.knob}={verdict.value}"
