"""What the API reads from a run directory, shaped as its bodies: a run's summary, its
metrics from a byte offset (downsampled), its budget. Every read goes through the core's
readers (``kernel.read_kernel_state``, ``DecisionLog``, ``ReviewQueue``, ``Budget``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

from autopilot.budget import Budget
from autopilot.config import Settings
from autopilot.decisions import DecisionLog
from autopilot.metrics_tail import latest_values, recent_metrics
from autopilot.review import ReviewQueue
from autopilot.run_mode import ResolvedMode
from autopilot.service.metric_columns import COLUMNS, Columns, page_of
from autopilot.service.metric_lines import parse
from autopilot.service.models import BudgetOut, MetricsPage, PilotOut, RunDetail
from autopilot.service.runs import PilotStatus
from kernel import KernelError, KernelState, read_kernel_state
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE

logger = logging.getLogger(__name__)


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


DEFAULT_MAX_POINTS = 2000
"""How many points a series is downsampled to unless a request says (the page's own)."""


def warm(paths: Iterable[Path], share: float = 0.75) -> int:
    """Read the runs' metrics into the process's cache, and page them as the dashboard asks
    first (every series, ``DEFAULT_MAX_POINTS``), the latest written first, while the cache
    is under ``share`` of its size: so a run opens fast the first time too. The number of
    runs warmed; a run that cannot be read is skipped (its page will say why)."""

    def written(path: Path) -> float:
        try:
            return (path / METRICS_FILE).stat().st_mtime
        except OSError:
            return 0.0

    warmed = 0
    for path in sorted(paths, key=written, reverse=True):
        if COLUMNS.nbytes >= share * COLUMNS.max_bytes:
            break
        try:
            metrics_page(path, 0, None, DEFAULT_MAX_POINTS)
        except Exception as exc:  # a garbled run must not stop the others' warm-up
            logger.info("warming the metrics of %s skipped: %s", path, exc)
            continue
        warmed += 1
    return warmed


def metrics_page(path: Path, offset: int, names: list[str] | None, max_points: int) -> MetricsPage:
    """The current segment's records from byte ``offset`` (0: the segment's start), as one
    series per metric, each downsampled to ``max_points`` with LTTB. The segment's start
    is served from the process's cached columns (``metric_columns.COLUMNS``), extended by
    what was appended since; a later offset is read from there."""
    state = read_kernel_state(path)
    segment = state.segment if state is not None else None
    if not offset:
        start = state.metrics_start if state is not None else 0
        return COLUMNS.page(path, start=start, segment=segment, names=names, max_points=max_points)
    tail = JsonlTail(path / METRICS_FILE, offset=offset)
    columns = Columns()
    columns.add(parse(tail.read_new(), segment))
    return page_of(columns, offset, tail.offset, segment, names, max_points)


def budget_of(path: Path, settings: Settings) -> BudgetOut:
    budget = Budget(path, settings)
    return BudgetOut(
        spent_run_usd=budget.spent_run(),
        per_run_usd=settings.budget.per_run_usd,
        spent_day_usd=budget.spent_day(),
        per_day_usd=settings.budget.per_day_usd,
        remaining_usd=budget.remaining(),
    )
