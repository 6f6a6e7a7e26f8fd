"""What the API reads from a run directory, shaped as its bodies: a run's summary, its
metrics from a byte offset (downsampled), its budget. Every read goes through the core's
readers (``kernel.read_kernel_state``, ``DecisionLog``, ``ReviewQueue``, ``Budget``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from autopilot.budget import Budget
from autopilot.cli._metrics import latest_values, recent_metrics
from autopilot.config import Settings
from autopilot.decisions import DecisionLog
from autopilot.review import ReviewQueue
from autopilot.run_mode import ResolvedMode
from autopilot.service.lttb import lttb
from autopilot.service.models import BudgetOut, MetricsPage, PilotOut, RunDetail, Series
from autopilot.service.runs import PilotStatus
from kernel import KernelError, KernelState, MetricRecord, read_kernel_state
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE


def run_detail(
    run_id: str, path: Path, settings: Settings, mode: ResolvedMode, pilot: PilotStatus
) -> RunDetail:
    """The run's summary and its ``kernel.json``."""
    try:
        state = read_kernel_state(path)
    except KernelError as exc:  # a garbled kernel.json must not hide the other runs
        state, status = None, f"unreadable: {exc}"
    else:
        status = _status(state)
    views = DecisionLog(path).read()
    detail = RunDetail(
        id=run_id,
        status=status,
        mode=mode.mode,
        mode_source=mode.source,
        pilot=PilotOut.of(pilot),
        kernel=state,
        decisions=len(views),
        fallback_reason=views[-1].record.fallback_reason if views else None,
        spend_usd=Budget(path, settings).spent_run(),
        pending_reviews=_pending(path, state),
    )
    if state is None:
        return detail
    update: dict[str, object] = {
        "segment": state.segment,
        "last_step": state.last_step,
        "heartbeat_age_s": round(max(state.heartbeat_age(), 0.0), 3),
        "key_metric": state.key_metric,
    }
    if state.key_metric:
        records = [r for r in recent_metrics(path) if r.segment == state.segment]
        step, value = latest_values(records).get(state.key_metric, (None, None))
        update |= {"key_step": step, "key_value": _finite(value)}
    return detail.model_copy(update=update)


def _pending(path: Path, state: KernelState | None) -> int:
    step = 0 if state is None else state.last_step  # 0: no kernel.json to read it from
    return sum(1 for i in ReviewQueue(path).items(step) if i.status == "pending")


def _status(state: KernelState | None) -> str:
    if state is None:
        return "waiting"
    if state.status in ("running", "paused", "stopping") and state.has_ended():
        return "ended"
    return state.status


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def metrics_page(path: Path, offset: int, names: list[str] | None, max_points: int) -> MetricsPage:
    """The current segment's records from byte ``offset`` (0: the segment's start), as one
    series per metric, each downsampled to ``max_points`` with LTTB."""
    state = read_kernel_state(path)
    start = offset or (state.metrics_start if state is not None else 0)
    tail = JsonlTail(path / METRICS_FILE, offset=start)
    segment = state.segment if state is not None else None
    columns: dict[str, tuple[list[int], list[float]]] = {}
    rewinds = []
    wanted = None if names is None else set(names)
    for _, text in tail.read_new():
        record = _record(text)
        if record is None or (segment is not None and record.segment != segment):
            continue
        step = record.step
        if record.rewound_to is not None:
            rewinds.append((step, record.rewound_to))
        for name, value in record.metrics.items():
            column = columns.get(name)
            if column is None:
                if wanted is not None and name not in wanted:
                    continue
                column = columns[name] = ([], [])
            column[0].append(step)
            column[1].append(value)
    series = {name: _series(steps, values, max_points) for name, (steps, values) in columns.items()}
    return MetricsPage(
        offset=start,
        next_offset=tail.offset,
        segment=segment,
        downsampled=any(len(s.steps) < s.points for s in series.values()),
        series=series,
        rewinds=rewinds,
    )


def _record(text: str) -> MetricRecord | None:
    try:
        return MetricRecord.model_validate_json(text)
    except ValidationError:
        return None  # a line written by something else


def _series(steps: list[int], values: list[float], max_points: int) -> Series:
    """Downsampled over the finite points; every non-finite point is kept (as ``None``)."""
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    finite = np.isfinite(y)
    keep = np.flatnonzero(finite)
    if len(keep) > max_points:
        keep = keep[lttb(x[keep], y[keep], max_points)]
    kept = np.union1d(keep, np.flatnonzero(~finite))
    return Series(
        steps=[steps[i] for i in kept],
        values=[values[i] if finite[i] else None for i in kept],
        points=len(steps),
    )


def budget_of(path: Path, settings: Settings) -> BudgetOut:
    budget = Budget(path, settings)
    return BudgetOut(
        spent_run_usd=budget.spent_run(),
        per_run_usd=settings.budget.per_run_usd,
        spent_day_usd=budget.spent_day(),
        per_day_usd=settings.budget.per_day_usd,
        remaining_usd=budget.remaining(),
    )
