"""Render the harness's results for people: a markdown report and PNG plots per command.

``write_replay_report`` turns a ``ReplayReport`` into ``report.md`` (detection quality per
kind, how many healthy runs alarmed, the LLM's cost, every run's labels and alarms) and
``detections.png`` (one panel per run: the key metric, the labelled onsets with their
detection windows, the alarms). ``write_bench_report`` turns a ``BenchReport`` into
``report.md`` (one row per task and policy, the oracles) and ``curves_<task>.png`` (each
policy's key metric over one seed, its interventions, the oracle's final value).

Numbers are rounded for reading (4 significant digits for metrics); ``-`` means there is no
figure (no event of that kind, no gap to close), ``inf`` a run that diverged. Plots need
matplotlib; without it the markdown is still written and says why the plots are missing.

Example:
    >>> report, alarms = replay(runs, policy="rules", settings=Settings())  # doctest: +SKIP
    >>> write_replay_report(report, alarms, Path("out/replay"))  # doctest: +SKIP
    PosixPath('out/replay/report.md')
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.results import Alarm, BenchReport, BenchRun, ReplayReport, ReplayRun
from evals.scoring import window_end

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``42s``, ``1m02s``, ``2h05m``: short enough for a report header."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


Curve = tuple[list[int], list[float | None]]
"""``(steps, values)``; a ``None`` value is a gap in the line."""

REPORT_FILE = "report.md"
DETECTIONS_FILE = "detections.png"
COLUMNS = 4
DPI = 100
MAX_ALARMS_LISTED = 8
"""A run alarming every tick would make its table row unreadable; the plot shows them all."""
KIND_COLOURS = {
    "plateau": "tab:blue",
    "divergence": "tab:red",
    "overfitting": "tab:purple",
    "oscillation": "tab:orange",
    "imbalance": "tab:olive",
}
OTHER_COLOURS = ("tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
POLICY_COLOURS = {"none": "tab:gray", "rules": "tab:blue", "ai": "tab:orange", "tune": "tab:green"}
HOW_TO_READ = (
    "**How to read.** Each row is a task trained under a policy, over every seed: the final "
    "key metric is the median with the lowest and highest seed in brackets. *Gap closed* is "
    "`(none - policy) / (none - oracle)` on the medians (sign flipped when higher is better): "
    "100% matches the best static configuration found by the grid sweep, 0% does no better "
    "than leaving the run alone, a negative figure does harm; `-` when the starting "
    "configuration is already within noise of the oracle. On a healthy task a good policy "
    "shows about 0 interventions and no loss against `none`."
)


# --- replay ----------------------------------------------------------------------------------


def write_replay_report(
    report: ReplayReport,
    alarms: list[Alarm],
    out: Path,
    curves: dict[str, Curve] | None = None,
) -> Path:
    """Write ``out/report.md`` and ``out/detections.png``; return the markdown's path.

    Args:
        report: what ``evals.replay.replay`` returned.
        alarms: the alarms it returned with it.
        out: the directory to write into (created as needed).
        curves: run name -> its key metric, drawn behind the detections when given.
    """
    out.mkdir(parents=True, exist_ok=True)
    missing = _plot_or_reason(
        lambda: _detections_figure(report, alarms, curves or {}), out / DETECTIONS_FILE
    )
    md = out / REPORT_FILE
    md.write_text(_replay_markdown(report, alarms, missing), encoding="utf-8")
    return md


def replay_table(report: ReplayReport) -> str:
    """The markdown table of detection quality, one row per labelled kind: ``FP`` and
    ``cross`` count runs (at most one per run), ``alarms`` every alarm of the kind."""
    header = ["kind", "events", "detected", "late", "FP", "cross", "P", "R", "F1"]
    header += ["lat(steps) med/max", "lat(evals) med/max", "episodes", "alarms"]
    rows = [
        [s.kind, s.events, s.detected, s.late, s.false_alarms, s.cross_kind]
        + [_ratio(s.precision), _ratio(s.recall), _ratio(s.f1)]
        + [_med_max(s.latency_median, s.latency_max)]
        + [_med_max(s.latency_evals_median, s.latency_evals_max), s.episodes, s.alarms]
        for s in report.scores
    ]
    return _table(header, rows)


def replay_totals(report: ReplayReport) -> list[str]:
    """The headline lines under the table: healthy runs alarmed, episodes, alarms."""
    share = report.healthy_runs_alarmed_fraction
    return [
        f"healthy runs alarmed: {report.healthy_runs_alarmed} of {report.healthy_runs} "
        f"({'-' if share is None else f'{100 * share:.0f} %'})",
        f"episodes: {sum(r.episodes for r in report.runs)}",
        f"alarms: {sum(r.alarms for r in report.runs)}",
    ]


def _replay_markdown(report: ReplayReport, alarms: list[Alarm], missing: str | None) -> str:
    events = sum(len(r.events) for r in report.runs)
    healthy = sum(1 for r in report.runs if not r.events)
    parts = [
        f"# Replay: policy `{report.policy}`",
        _bullets(
            [
                f"detection window: {_window(report)}",
                f"runs: {len(report.runs)} (labelled events: {events}, healthy runs: {healthy})",
                f"wall time: {format_duration(report.wall_s)}",
                f"git commit: {report.git_commit or '-'}",
                f"created: {_iso(report.created)}",
            ]
        ),
        "## Detection per kind",
        replay_table(report),
        _bullets(replay_totals(report)),
        f"Alarms on healthy runs: {_num(report.false_alarms_per_1k_healthy_steps)} per "
        f"1,000 steps (alarms of every kind: {report.healthy_alarms}, over "
        f"{report.healthy_steps:,} steps).",
    ]
    if report.policy == "ai":
        parts += ["## LLM", _llm_bullets(report)]
    parts += ["## Runs", _runs_table(report.runs, alarms), _figure(DETECTIONS_FILE, missing)]
    return "\n\n".join(parts) + "\n"


def _llm_bullets(report: ReplayReport) -> str:
    return _bullets(
        [
            f"model: {report.model or '-'}, prompt version: {report.prompt_version or '-'}",
            f"tokens per run: {report.tokens_per_run:,.0f}",
            f"USD per run: {_usd(report.usd_per_run)}",
            f"LLM calls: {sum(r.llm_calls for r in report.runs)}, fallbacks to the rules: "
            f"{sum(r.fallbacks for r in report.runs)}",
        ]
    )


def _runs_table(runs: list[ReplayRun], alarms: list[Alarm]) -> str:
    by_run = _alarms_by_run(alarms)
    rows = [
        [
            r.run,
            ", ".join(f"{kind}@{onset}" for kind, onset in r.events) or "healthy",
            _alarm_list(by_run[r.run]),
            f"{r.usage.tokens_in + r.usage.tokens_out:,}",
            _usd(r.usage.cost_usd),
        ]
        for r in runs
    ]
    return _table(["run", "labels", "alarms", "tokens", "USD"], rows, left=3)


def _alarm_list(alarms: list[Alarm]) -> str:
    shown = ", ".join(f"{a.kind}@{a.step}" for a in alarms[:MAX_ALARMS_LISTED])
    more = len(alarms) - MAX_ALARMS_LISTED
    return f"{shown}, ... (+{more} more)" if more > 0 else shown or "-"


def _alarms_by_run(alarms: list[Alarm]) -> defaultdict[str, list[Alarm]]:
    by_run: defaultdict[str, list[Alarm]] = defaultdict(list)
    for alarm in sorted(alarms, key=lambda a: a.step):
        by_run[alarm.run].append(alarm)
    return by_run


def _detections_figure(
    report: ReplayReport, alarms: list[Alarm], curves: dict[str, Curve]
) -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    runs = report.runs
    cols = max(1, min(COLUMNS, len(runs)))
    rows = max(1, math.ceil(len(runs) / cols))
    fig = _new_figure(4.0 * cols, 2.6 * rows + 0.5)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    by_run = _alarms_by_run(alarms)
    kinds = sorted({a.kind for a in alarms} | {k for r in runs for k, _ in r.events})
    colours = _kind_colours(kinds)
    for ax, run in zip(axes, runs, strict=False):
        _detection_panel(ax, run, by_run[run.run], curves.get(run.run), report, colours)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    handles: list[Any] = [Line2D([], [], color="0.3", lw=1, label="key metric")] if curves else []
    handles += [
        Line2D([], [], marker="v", ls="none", color=colours[k], label=f"{k} alarm") for k in kinds
    ]
    handles += [
        Line2D([], [], ls="--", color="0.4", label="labelled onset (colour: kind)"),
        Patch(color="0.4", alpha=0.15, label="detection window"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(6, len(handles)), fontsize=8)
    return fig


def _detection_panel(
    ax: Axes,
    run: ReplayRun,
    alarms: list[Alarm],
    curve: Curve | None,
    report: ReplayReport,
    colours: dict[str, str],
) -> None:
    if curve is not None:
        steps, values = curve
        ax.plot(steps, _floats(values), color="0.3", lw=1)
        if _spans_decades(values):
            ax.set_yscale("log")
    else:
        ax.set_yticks([])  # nothing is drawn against the y axis
    for kind, onset in run.events:
        end = window_end(
            run,
            onset,
            tolerance=report.tolerance_steps,
            tolerance_evals=report.tolerance_evals,
            kind=kind,
        )
        ax.axvline(onset, ls="--", lw=1, color=colours[kind])
        ax.axvspan(onset, end, color=colours[kind], alpha=0.15, lw=0)
    # alarms along the top, a row per kind: visible whatever the curve does
    for row, (alarm_kind, colour) in enumerate(colours.items()):
        steps = [a.step for a in alarms if a.kind == alarm_kind]
        if steps:
            y = [0.95 - 0.08 * row] * len(steps)
            ax.plot(steps, y, "v", ms=5, color=colour, transform=ax.get_xaxis_transform())
    if run.last_step > 0:
        ax.set_xlim(0, run.last_step)
    ax.set_title(run.run, fontsize=9)
    ax.tick_params(labelsize=7)


def _kind_colours(kinds: Iterable[str]) -> dict[str, str]:
    others = itertools.cycle(OTHER_COLOURS)
    return {k: KIND_COLOURS.get(k) or next(others) for k in kinds}


# --- bench -----------------------------------------------------------------------------------


def write_bench_report(report: BenchReport, out: Path) -> Path:
    """Write ``out/report.md`` and ``out/curves_<task>.png`` per task; return the markdown's
    path. ``/`` in a task's name becomes ``_`` in its file name."""
    out.mkdir(parents=True, exist_ok=True)
    missing: str | None = None
    for task in report.tasks:
        missing = _plot_or_reason(partial(_curves_figure, report, task), out / _curves_file(task))
        if missing is not None:
            break
    md = out / REPORT_FILE
    md.write_text(_bench_markdown(report, missing), encoding="utf-8")
    return md


def bench_table(report: BenchReport) -> str:
    """The main markdown table: one row per task and policy, in ``report.cells``'s order."""
    header = ["task", "policy", f"final {report.key_metric}: median (seed range)"]
    header += ["gap closed", "interventions (median)", "tokens/run", "USD/run", "wall s (total)"]
    header += ["runs used"]
    rows = []
    for c in report.cells:
        worst = _diverged_text(report) if _any_diverged(report, c.task, c.policy) else "-"
        final = _metric(c.median, worst)
        lo, hi = _metric(c.lo, worst), _metric(c.hi, worst)
        if (lo, hi) not in {(final, final), ("-", "-")}:  # the oracle row has no spread
            final += f" ({lo}-{hi})"
        rows.append(
            [c.task, c.policy, final, _pct(c.gap_closed), _num(c.interventions)]
            + [f"{c.tokens:,.0f}", _usd(c.usd), f"{c.wall_s:.1f}", c.runs_used]
        )
    return _table(header, rows, left=2)


def bench_mode(report: BenchReport) -> str:
    """How the autopilot's policies ran, in a few words."""
    if report.mode == "live":
        pace = f"{report.step_ms:g} ms a step" if report.step_ms is not None else "paced"
        return (
            f"live (the autopilot in its own `autopilot watch` process, the training at {pace}"
            ", the kernel's default cadences)"
        )
    return "lock-step (the training loop ticks the autopilot; the kernel polls every step)"


def _bench_markdown(report: BenchReport, missing: str | None) -> str:
    skipped = ", ".join(f"{p} ({why})" for p, why in report.skipped.items()) or "-"
    better = "lower" if report.key_mode == "min" else "higher"
    parts = [
        "# Bench",
        _bullets(
            [
                f"mode: {bench_mode(report)}",
                f"tasks: {len(report.tasks)} ({', '.join(report.tasks) or '-'})",
                f"policies: {', '.join(report.policies) or '-'}",
                f"skipped policies: {skipped}",
                f"seeds: {report.seeds}",
                f"key metric: {report.key_metric} ({better} is better)",
                f"workers: {report.workers}",
                f"wall time: {format_duration(report.wall_s)}",
                f"git commit: {report.git_commit or '-'}",
                f"created: {_iso(report.created)}",
            ]
        ),
        "## Results",
        bench_table(report),
        "## Oracle (best static configuration per setup)",
        _oracle_table(report),
        *_reaction_section(report),
        HOW_TO_READ,
        "## Curves",
    ]
    parts += [_figure(_curves_file(task), missing, alt=task) for task in report.tasks]
    return "\n\n".join(parts) + "\n"


def _reaction_section(report: BenchReport) -> list[str]:
    """Per autopilot run of a task with a loop bug: the steps from the bug to the first change
    applied (by the ledger); nothing when the bench has no such run."""
    runs = [r for r in report.runs if r.bug_step is not None and r.mode is not None]
    if not runs:
        return []
    rows = [
        [r.task, r.policy, r.seed, r.bug_step, _num(r.reaction_steps), _changes(r)] for r in runs
    ]
    header = ["task", "policy", "seed", "bug at step", "steps to the first change", "changes"]
    return ["## Reaction to the loop bugs", _table(header, rows, left=2)]


def _changes(run: BenchRun) -> str:
    return (
        ", ".join(
            f"{c.step}: {'rewind' if c.op == 'rewind' else c.knob} ({c.source})"
            for c in run.interventions
        )
        or "-"
    )


def _oracle_table(report: BenchReport) -> str:
    rows = [
        [
            o.setup,
            _params(o.params),
            _metric(o.final),
            o.grid_points,
            o.runs_used,
            f"{o.wall_s:.1f}",
        ]
        for o in report.oracles
    ]
    return _table(["setup", "params", "final", "grid points", "runs used", "wall s"], rows, left=2)


def _curves_figure(report: BenchReport, task: str) -> Figure:
    fig = _new_figure(8.0, 4.5)
    ax = fig.subplots()
    runs = _first_seed_runs(report, task)
    oracle = _oracle_final(report, task)
    log = _spans_decades([v for r in runs for v in r.curve[1]] + [oracle])
    if log:
        ax.set_yscale("log")
    for run in runs:
        _policy_curve(ax, run, log=log)
    if oracle is not None:
        ax.axhline(oracle, ls=":", color="black", lw=1, label=f"oracle {_metric(oracle)}")
    title = task + (f": {report.descriptions[task]}" if task in report.descriptions else "")
    ax.set_title(title if len(title) <= 95 else title[:94] + "…", fontsize=9)
    ax.set(xlabel="step", ylabel=report.key_metric)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    return fig


def _policy_curve(ax: Axes, run: BenchRun, *, log: bool) -> None:
    """One policy's curve, with a dot and the knob's name where each intervention landed."""
    colour = POLICY_COLOURS.get(run.policy, "black")
    label = f"{run.policy} (seed {run.seed}{', diverged' if run.diverged else ''})"
    ax.plot(run.curve[0], _floats(run.curve[1]), color=colour, lw=1.2, label=label)
    for i in run.interventions:
        y = _value_at(run.curve, i.step, log=log)
        if y is not None:
            ax.plot(i.step, y, "o", ms=4, color=colour)
            ax.annotate(i.knob, (i.step, y), xytext=(2, 3), textcoords="offset points",
                        fontsize=7, color=colour)  # fmt: skip


def _first_seed_runs(report: BenchReport, task: str) -> list[BenchRun]:
    """Per policy (in the report's order), its run of ``task`` with the smallest seed."""
    firsts: dict[str, BenchRun] = {}
    for run in report.runs:
        if run.task == task and (run.policy not in firsts or run.seed < firsts[run.policy].seed):
            firsts[run.policy] = run
    order = {p: i for i, p in enumerate(report.policies)}
    return sorted(firsts.values(), key=lambda r: order.get(r.policy, len(order)))


def _oracle_final(report: BenchReport, task: str) -> float | None:
    """The oracle of ``task``: the one of its setup."""
    setup = report.setups.get(task, task.rsplit("/", 1)[0])
    return next((o.final for o in report.oracles if o.setup == setup), None)


def _any_diverged(report: BenchReport, task: str, policy: str) -> bool:
    """Whether a seed ended non-finite: the aggregate counts it as the worst value there is."""
    runs = [r for r in report.runs if r.task == task and r.policy == policy]
    return any(r.diverged or r.final is None for r in runs)


def _diverged_text(report: BenchReport) -> str:
    return "inf" if report.key_mode == "min" else "-inf"


def _curves_file(task: str) -> str:
    return f"curves_{task.replace('/', '_')}.png"


# --- plotting --------------------------------------------------------------------------------


def _plot_or_reason(make: Callable[[], Figure], path: Path) -> str | None:
    """Save the figure ``make()`` draws to ``path``; the reason when plots cannot be drawn."""
    try:
        fig = make()
    except ImportError as exc:
        reason = f"plots skipped: matplotlib is not installed ({exc}); pip install matplotlib"
        logger.warning(reason)
        return reason
    fig.savefig(path)
    return None


def _new_figure(width: float, height: float) -> Figure:
    # a Figure on an Agg canvas of its own: no pyplot, no global backend, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _spans_decades(values: Iterable[float | None]) -> bool:
    """Whether a log-scale y suits ``values``: the finite ones are positive and span > 10x."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) > 10 * min(finite)


def _floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _value_at(curve: Curve, step: int, *, log: bool = False) -> float | None:
    """The curve at ``step``, interpolated between its finite neighbours as drawn (linearly,
    or geometrically on a log scale) so a marker sits on the line; else the nearest point."""
    points = [(s, v) for s, v in zip(*curve, strict=False) if v is not None and math.isfinite(v)]
    before = [p for p in points if p[0] <= step]
    after = [p for p in points if p[0] > step]
    if not (before and after):
        nearest = before[-1:] or after[:1]
        return nearest[0][1] if nearest else None
    (s0, v0), (s1, v1) = before[-1], after[0]
    t = (step - s0) / (s1 - s0)
    if log and v0 > 0 and v1 > 0:
        return v0 * (v1 / v0) ** t
    return v0 + (v1 - v0) * t


# --- markdown --------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], *, left: int = 1) -> str:
    """A markdown table; the first ``left`` columns are text, the others numbers (right)."""
    rule = [":---" if i < left else "---:" for i in range(len(header))]
    lines = [_row(header), _row(rule)] + [_row(str(c) for c in row) for row in rows]
    return "\n".join(lines)


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _figure(file: str, missing: str | None, *, alt: str = "") -> str:
    return f"_{missing}_" if missing else f"![{alt or file}]({file})"


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _metric(value: float | None, missing: str = "-") -> str:
    return missing if value is None else _num(value)


def _window(report: ReplayReport) -> str:
    steps = f"{report.tolerance_steps} steps"
    if report.tolerance_evals is None:
        return f"{steps} after onset"
    return f"{steps} or {report.tolerance_evals} evaluations after onset, whichever ends later"


def _med_max(median: float | None, top: float | None) -> str:
    return "-" if median is None else f"{_num(median)}/{_num(top)}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _usd(value: float) -> str:
    return f"{value:.4g}"


def _params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(params.items())) or "-"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
