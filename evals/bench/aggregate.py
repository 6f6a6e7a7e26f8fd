"""From bench runs to the table: medians over seeds, spreads, the oracle and the gap closed.

``gap_closed = (none - policy) / (none - oracle)`` on the medians of the final key metric
(signs flipped for a maximised metric): 1 means the policy reached the best static
configuration, 0 that it did no better than leaving the run alone, below 0 that it hurt.
It is ``None`` for a task that starts from a good configuration (only "did it leave the run
alone?" is meaningful there) and when the starting configuration is no worse than the oracle.

A diverged seed counts as the worst possible value in medians, and a median that is not
finite leaves the gap undefined.

Example:
    >>> gap_closed(none=1.0, policy=0.5, oracle=0.0, mode="min")
    0.5
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from evals.results import BenchCell, BenchRun, MultiCell, MultiSequence, OracleResult
from kernel.metric_names import MetricMode


def oracle_of(setup: str, runs: list[BenchRun], mode: MetricMode, wall_s: float) -> OracleResult:
    """The best static configuration, chosen and scored on different seeds: for each seed,
    the grid point with the best median over the *other* seeds, scored by its run on that
    seed; the oracle's final is the median of those held-out scores (with one seed, its
    own best: there is nothing to hold out). ``params`` is the point best over all seeds."""
    by_point: dict[tuple[tuple[str, float], ...], list[BenchRun]] = defaultdict(list)
    for run in runs:
        by_point[tuple(sorted(run.params.items()))].append(run)
    pick = min if mode == "min" else max
    medians = {point: _median(group, mode) for point, group in by_point.items()}
    best = pick(medians, key=lambda p: medians[p])
    seeds = sorted({run.seed for run in runs})
    held_out = []
    for seed in seeds if len(seeds) > 1 else []:
        others = {p: _median([r for r in g if r.seed != seed], mode) for p, g in by_point.items()}
        chosen = pick(others, key=lambda p: others[p])
        scored = [r for r in by_point[chosen] if r.seed == seed]
        if scored:
            held_out.append(_value(scored[0], mode))
    final = statistics.median(held_out) if held_out else medians[best]
    return OracleResult(
        setup=setup,
        params=dict(best),
        final=_finite(final),
        grid_points=len(by_point),
        runs_used=len(runs),
        wall_s=wall_s,
    )


def cells_for(
    tasks: list[str],
    policies: list[str],
    runs: list[BenchRun],
    oracle_by_task: dict[str, OracleResult],
    mode: MetricMode,
    *,
    healthy: frozenset[str] = frozenset(),
) -> list[BenchCell]:
    """Per task, one cell per policy that has runs, then the task's oracle row. ``healthy``
    tasks start from a good configuration: they have no gap to close (``None``)."""
    grouped: dict[tuple[str, str], list[BenchRun]] = defaultdict(list)
    for run in runs:
        grouped[(run.task, run.policy)].append(run)
    cells = []
    for task in tasks:
        none, oracle = grouped.get((task, "none")), oracle_by_task.get(task)
        for policy in policies:
            group = grouped.get((task, policy))
            if not group:
                continue
            gap = None
            if none and oracle is not None and oracle.final is not None and task not in healthy:
                gap = gap_closed(
                    none=_median(none, mode),
                    policy=_median(group, mode),
                    oracle=oracle.final,
                    mode=mode,
                )
            cells.append(_cell(task, policy, group, gap, mode))
        if oracle is not None:
            cells.append(_oracle_cell(task, oracle))
    return cells


def _oracle_cell(task: str, oracle: OracleResult) -> BenchCell:
    return BenchCell(
        task=task,
        policy="oracle",
        seeds=oracle.runs_used // max(oracle.grid_points, 1),
        median=oracle.final,
        lo=None,
        hi=None,
        gap_closed=None,
        interventions=0,
        wall_s=oracle.wall_s,
        runs_used=oracle.runs_used,
    )


def gap_closed(*, none: float, policy: float, oracle: float, mode: MetricMode) -> float | None:
    """See the module docstring."""
    sign = 1.0 if mode == "min" else -1.0
    gap = sign * (none - oracle)
    if not (math.isfinite(none) and math.isfinite(policy) and math.isfinite(oracle)):
        return None
    if gap <= 1e-12:
        return None
    return sign * (none - policy) / gap


def _cell(
    task: str, policy: str, runs: list[BenchRun], gap: float | None, mode: MetricMode
) -> BenchCell:
    finals = [_value(r, mode) for r in runs]
    return BenchCell(
        task=task,
        policy=policy,  # type: ignore[arg-type]
        seeds=len(runs),
        diverged=sum(1 for r in runs if r.final is None),
        median=_finite(statistics.median(finals)),
        lo=_finite(min(finals)),
        hi=_finite(max(finals)),
        gap_closed=gap,
        interventions=float(statistics.median(len(r.interventions) for r in runs)),
        tokens=float(sum(r.usage.tokens_in + r.usage.tokens_out for r in runs)) / len(runs),
        usd=sum(r.usage.cost_usd for r in runs) / len(runs),
        wall_s=sum(r.wall_s for r in runs),
        runs_used=sum(r.runs_used for r in runs),
    )


def _value(run: BenchRun, mode: MetricMode) -> float:
    if run.final is None:
        return math.inf if mode == "min" else -math.inf
    return run.final


def _median(runs: list[BenchRun], mode: MetricMode) -> float:
    return float(statistics.median(_value(r, mode) for r in runs))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def vs_oracle(final: float | None, oracle: float | None, mode: MetricMode) -> float | None:
    """How far ``final`` is from the oracle's, relative to it, positive when worse (in the
    metric's direction); ``None`` when either is missing or the oracle is 0.

    Example:
        >>> round(vs_oracle(0.102, 0.1, "min"), 6), round(vs_oracle(0.98, 1.0, "max"), 6)
        (0.02, 0.02)
    """
    if final is None or oracle is None or not math.isfinite(final) or oracle == 0:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return sign * (final - oracle) / abs(oracle)


def multi_cells(
    tasks: list[str], policies: list[str], sequences: list[MultiSequence]
) -> list[MultiCell]:
    """Per task and policy with sequences, the runs (trials) needed over seeds."""
    grouped: dict[tuple[str, str], list[MultiSequence]] = defaultdict(list)
    for seq in sequences:
        grouped[(seq.task, seq.policy)].append(seq)
    cells = []
    for task, policy in ((t, p) for t in tasks for p in policies):
        group = sorted(grouped.get((task, policy), []), key=lambda s: s.seed)
        if group:
            cells.append(_multi_cell(group))
    return cells


def _multi_cell(group: list[MultiSequence]) -> MultiCell:
    first = group[0]
    needed = [s.needed for s in group]
    longest = max(len(s.steps) for s in group)
    per_number, within = [], []
    for i in range(longest):
        steps = [s.steps[min(i, len(s.steps) - 1)] for s in group if s.steps]
        gaps = [math.inf if step.vs_oracle is None else step.vs_oracle for step in steps]
        per_number.append(_median_or_none(gaps))
        within.append(sum(step.within for step in steps))
    return MultiCell(
        task=first.task,
        policy=first.policy,
        budget=first.budget,
        needed=needed,
        median=median_needed(needed),
        vs_oracle=per_number,
        within=within,
        runs_used=sum(s.runs_used for s in group),
        tuner_decisions=sum(step.tuner_decisions for s in group for step in s.steps),
    )


def median_needed(needed: list[int | None]) -> int | None:
    """The upper median of runs needed, a miss (``None``) above every number.

    Example:
        >>> median_needed([1, 2, None]), median_needed([None, 3, None]), median_needed([1, 2])
        (2, None, 2)
    """
    if not needed:
        return None
    value = statistics.median_high([math.inf if n is None else float(n) for n in needed])
    return int(value) if math.isfinite(value) else None


def _median_or_none(values: list[float]) -> float | None:
    return _finite(float(statistics.median(values))) if values else None
