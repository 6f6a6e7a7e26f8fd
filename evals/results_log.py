"""The results log: one JSON line of headline figures per harness run, stamped with the commit.

Reports are rewritten on every run; the log keeps every run's figures side by side, so a
change to a detector or a prompt can be compared with the runs before it. A line holds the
time, the command, the git commit and whether the tree had uncommitted changes (a figure
from a dirty tree cannot be reproduced from the commit alone), and the headline figures of
the report: no curves, no per-run detail. Lines are appended with ``kernel.jsonl``, whole
and under a lock, so concurrent harness runs can share one log.

``autopilot eval`` appends to ``OUT/results.jsonl`` unless ``--log`` names another file;
the committed ``evals/results.jsonl`` holds the runs behind the README's tables.

Example:
    >>> entry = append_result(Path("runs/eval-replay/results.jsonl"), report,  # doctest: +SKIP
    ...                       command=sys.argv)
    >>> read_results(Path("runs/eval-replay/results.jsonl"))[-1]["kind"]  # doctest: +SKIP
    'replay'
"""

from __future__ import annotations

import logging
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import RootModel

from evals.results import BenchReport, MultiReport, ReplayReport
from kernel.jsonl import append_json, read_models

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10.0


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit checked out in the repository holding ``cwd`` (the current directory when
    ``None``); ``None`` outside a repository or without git."""
    out = _git(["rev-parse", "HEAD"], cwd)
    if out is None:
        return None
    return out.strip() or None


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether the working tree has uncommitted changes; ``None`` when git cannot tell."""
    out = _git(["status", "--porcelain"], cwd)
    return bool(out.strip()) if out is not None else None


def append_result(
    log: Path, report: ReplayReport | BenchReport | MultiReport, *, command: list[str]
) -> dict[str, Any]:
    """Append the headline figures of ``report`` to ``log`` as one JSON line; return it.

    Args:
        log: the JSON-lines file; it and its parent directories are created as needed.
        report: a replay, bench or multi-run bench report.
        command: the command line that produced it (``sys.argv``).
    """
    if isinstance(report, ReplayReport):
        figures = _replay_figures(report)
    elif isinstance(report, MultiReport):
        figures = report.model_dump(mode="json", include=_MULTI_FIGURES)
    else:
        figures = _bench_figures(report)
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": report.kind,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "command": list(command),
        **figures,
    }
    entry = _finite(entry)
    log.parent.mkdir(parents=True, exist_ok=True)
    append_json(log, entry)
    return entry


def read_results(log: Path) -> list[dict[str, Any]]:
    """Every entry of ``log``, oldest first; an empty list when it does not exist. A torn or
    foreign line is skipped with a warning. Entries are as written: a figure added later
    (``healthy_runs_alarmed``, issue 11) is absent from older lines, so read them with
    ``.get``."""
    return [entry.root for entry in read_models(log, _Entry)]


class _Entry(RootModel[dict[str, Any]]):
    """One line of the log: any JSON object."""


_REPLAY_FIGURES = {
    "policy", "model", "prompt_version", "tolerance_steps", "tolerance_evals", "healthy_runs",
    "healthy_runs_alarmed", "healthy_runs_alarmed_fraction",
    "false_alarms_per_1k_healthy_steps", "tokens_per_run", "usd_per_run", "wall_s",
}  # fmt: skip
_SCORE_FIGURES = {"events", "detected", "late", "false_alarms", "cross_kind", "alarms",
                  "episodes", "precision", "recall", "f1", "latency_median", "latency_max",
                  "latency_evals_median", "latency_evals_max"}  # fmt: skip
_CELL_FIGURES = {"task", "policy", "median", "lo", "hi", "gap_closed", "interventions", "usd",
                 "wall_s"}  # fmt: skip
_BENCH_FIGURES: dict[str, Any] = {
    "mode": True, "step_ms": True,
    "seeds": True, "policies": True, "skipped": True, "key_metric": True, "key_mode": True,
    "workers": True, "wall_s": True, "cells": {"__all__": _CELL_FIGURES},
    "oracles": {"__all__": {"setup", "params", "final"}},
}  # fmt: skip

_MULTI_FIGURES: dict[str, Any] = {
    "tasks": True, "policies": True, "skipped": True, "seeds": True, "runs": True,
    "trials": True, "tolerance": True, "key_metric": True, "key_mode": True, "workers": True,
    "wall_s": True, "cells": True,
    "oracles": {"__all__": {"setup", "params", "final"}},
}  # fmt: skip


def _replay_figures(report: ReplayReport) -> dict[str, Any]:
    figures = report.model_dump(mode="json", include=_REPLAY_FIGURES)
    figures["runs"] = len(report.runs)
    figures["episodes"] = sum(r.episodes for r in report.runs)
    figures["alarms"] = sum(r.alarms for r in report.runs)
    figures["scores"] = {
        s.kind: s.model_dump(mode="json", include=_SCORE_FIGURES) for s in report.scores
    }
    return figures


def _bench_figures(report: BenchReport) -> dict[str, Any]:
    return report.model_dump(mode="json", include=_BENCH_FIGURES)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _git(args: list[str], cwd: Path | None) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git %s failed: %s", " ".join(args), exc)
        return None
    if done.returncode != 0:
        logger.debug("git %s: %s", " ".join(args), done.stderr.strip())
        return None
    return done.stdout
