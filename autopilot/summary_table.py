"""The summary table the LLM analyst reads: every metric's trend in as few tokens as will do.

Every token here is paid on every decision, so the table says each thing once:

- one legend line names the step, the key metric and what each column means;
- a row per metric that shows something: the key metric (first, starred), a validation
  measure (a ``val`` name that states its direction: generalisation is judged on those),
  a metric with a trend (improving or worsening), with non-finite values, or with too few
  points to tell; a validation metric's row ends with its gap to its train counterpart;
- one line for the rest, flat or noisy (no trend beyond their noise: a train loss that
  only jitters, a norm, a throughput), with their latest values and the largest noise
  among them: their rows' slopes and bests would be noise.

Numbers are integers where a decimal would not change a decision (slopes in % per 1,000
steps, which puts a plateau's -0.3% per 100 steps at -3; noise in %; steps since the best
in hundreds) and otherwise 3
significant digits without the leading zero (``.225``); cells are separated by single
spaces, not aligned: every run of padding costs a token. Names come from the run directory,
so an unsafe one is quoted (``autopilot.prompt_text``). About 18-22 tokens per full row
(a gap adds 4) and 3-6 per steady monitor: 267 for the 20 metrics of
``benchmarks/prompt_size.py``, where the old table of a row each took 656.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from autopilot.prompt_text import name, number
from kernel.metric_names import named_mode, split_role
from kernel.untrusted import SAFE_NAME

if TYPE_CHECKING:
    from autopilot.summary import GapSummary, MetricSummary, RunSummary

__all__ = ["render_table", "steady_monitor"]

COLUMNS = ("last", "best", "since", "slope", "short", "vol", "dir")
_NUMBER = re.compile(r"\d+")


def render_table(summary: RunSummary) -> str:
    """The legend, a row per metric that matters (key metric first), the steady monitors.

    Example:
        >>> from autopilot.summary import summarize
        >>> steps = list(range(0, 400, 20))
        >>> windows = {"val/loss": [steps, [1.0 - 0.001 * s for s in steps]]}
        >>> print(render_table(summarize(windows, {"val/loss": [0.62, 380]}, step=380,
        ...       key_metric="val/loss", key_mode="min")).splitlines()[1])
        *val/loss .62 .62 0 -123 -123 0 improving
    """
    metrics = list(summary.metrics.values())
    show_nf = any(m.nonfinite for m in metrics)
    gaps = {g.val: g for g in summary.gaps}
    full = [m for m in metrics if m.name == summary.key_metric or not steady_monitor(m)]
    steady = [m for m in metrics if m not in full]
    rows = [_row(m, m.name == summary.key_metric, show_nf, gaps.get(m.name)) for m in full]
    return "\n".join([_legend(summary, show_nf, summary.gaps), *rows, *_steady_line(steady)])


def steady_monitor(m: MetricSummary) -> bool:
    """A metric with nothing to show but its latest value: flat or noisy (no trend beyond
    its noise), all values finite, and no validation measure (generalisation is judged on
    those: a flat val/acc is news)."""
    validation = named_mode(m.name) is not None and split_role(m.name)[0] == "val"
    return m.direction in ("flat", "noisy") and not m.nonfinite and not validation


def _legend(summary: RunSummary, show_nf: bool, gaps: list[GapSummary]) -> str:
    columns = " ".join(COLUMNS) + " nf" * show_nf
    text = (
        f"step {summary.step}, key *{name(summary.key_metric)} ({summary.key_mode}). name "
        f"{columns}: since in 100 steps, slopes in %/1k steps (short: last quarter), vol in %"
    )
    if show_nf:
        text += "; nf: non-finite values"
    if gaps:
        text += "; gap val-train %, slope" + (
            " (w: widening)" if any(g.widening for g in gaps) else ""
        )
    return text


def _row(m: MetricSummary, key: bool, show_nf: bool, gap: GapSummary | None) -> str:
    since = "-" if m.steps_since_best is None else f"{m.steps_since_best / 100:.0f}"
    last = ("nan" if m.nonfinite else "-") if m.last is None else number(m.last)
    best = "-" if m.best is None else number(m.best)
    cells = [("*" if key else "") + name(m.name), last, best, since]
    cells += [_per_1k(m.slope), _per_1k(m.short_slope), _pct(m.volatility)]
    cells += [m.direction or "-"] + [str(m.nonfinite)] * show_nf
    if gap is not None and gap.gap is not None:
        cells += ["gap", _pct(gap.gap), _per_1k(gap.gap_slope)] + ["w"] * gap.widening
    return " ".join(cells)


def _steady_line(steady: list[MetricSummary]) -> list[str]:
    """``steady (flat or noisy), last: lr .001, layer0-2/norm .99 1 .97``: names that differ
    only in one number share an entry, their values in the numbers' order."""
    if not steady:
        return []
    groups: dict[str, list[tuple[int, MetricSummary]]] = {}
    for m in steady:
        numbered = _NUMBER.search(m.name) if re.fullmatch(SAFE_NAME, m.name) else None
        key = _NUMBER.sub("#", m.name, count=1) if numbered else m.name
        groups.setdefault(key, []).append((int(numbered.group()) if numbered else 0, m))
    vol = max(m.volatility or 0.0 for m in steady)
    entries = ", ".join(_entry(key, group) for key, group in groups.items())
    return [f"no trend (flat or noisy, vol <={_pct(vol)}), last: {entries}"]


def _entry(key: str, group: list[tuple[int, MetricSummary]]) -> str:
    if len(group) == 1:
        m = group[0][1]
        return f"{name(m.name)} {number(m.last or 0.0, 2)}"
    group.sort(key=lambda item: item[0])
    span = f"{group[0][0]}-{group[-1][0]}"
    values = " ".join(number(m.last or 0.0, 2) for _, m in group)
    return f"{key.replace('#', span)} {values}"


def _per_1k(slope: float | None) -> str:
    """A relative slope per 100 steps as an integer % per 1,000 steps."""
    return "-" if slope is None else _pct(10 * slope)


def _pct(value: float | None) -> str:
    """A fraction as an integer percent, 1 decimal under 1% (``0``: under 0.05%)."""
    if value is None:
        return "-"
    pct = 100 * value
    if abs(pct) < 0.05:
        return "0"
    return f"{pct:.0f}" if abs(pct) >= 0.95 else f"{pct:.1f}".replace("0.", ".")
