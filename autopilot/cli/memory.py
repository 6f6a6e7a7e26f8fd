"""``autopilot memory``: the runs the memory store remembers, their interventions, and what
they teach (``list``, ``show``, ``lessons``, ``forget``, ``export``).

The store is the one the autopilot writes: ``--memory URL``, else the config's
``[memory] url``, else ``$AUTOPILOT_MEMORY_URL``, else the SQLite file in the user's state
directory. Reading commands never create a SQLite store that is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from autopilot.cli._common import CliError
from autopilot.cli._format import table, value_text
from autopilot.errors import AutopilotError
from memory.records import InterventionRecord, RunRecord
from memory.store import MemoryStore, StoreError, is_postgres, open_store

if TYPE_CHECKING:
    from memory.lessons import Lesson

RUN_HEADERS = ("run", "task", "started (UTC)", "key metric", "best", "final", "changes")
CHANGE_HEADERS = ("step", "op", "source", "diagnosis", "change", "effect", "verdict")
EXPORT_FORMAT = 1


def cmd_list(args: argparse.Namespace) -> int:
    """One line per remembered run, oldest first (``--task`` one task's)."""
    with _store(args) as store:
        if store is None:
            return 0
        runs = _task_runs(store, args.task) if args.task else store.runs()
        counts = _counts(store.interventions())
        if not runs:
            print(f"no runs in the memory store {_where(args)}" + _of_task(args.task))
            return 0
        print("\n".join(table(RUN_HEADERS, [_run_cells(r, counts.get(r.run_id, 0)) for r in runs])))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One run in full, with its interventions in the order they happened."""
    with _existing(args) as store:
        run = _find(store, args.run, exact=False)
        changes = store.interventions(run_id=run.run_id)
    print("\n".join(_run_lines(run)))
    if changes:
        print(f"interventions ({len(changes)}):")
        print("\n".join(table(CHANGE_HEADERS, [_change_cells(c) for c in changes], "  ")))
    else:
        print("interventions: none")
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    """What the measured interventions teach, for one task (``--task``) or each task."""
    from memory.lessons import lessons

    with _store(args) as store:
        if store is None:
            return 0
        runs, cases = store.runs(), store.interventions()
        tasks = _task_runs(store, args.task) if args.task else runs
    latest: dict[str, RunRecord] = {r.task_key: r for r in tasks}  # the newest run of each
    if not latest:
        print(f"no runs in the memory store {_where(args)}" + _of_task(args.task))
        return 0
    blocks = [_lesson_lines(run, lessons(runs, cases, run.fingerprint)) for run in latest.values()]
    print("\n\n".join("\n".join(block) for block in blocks))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Delete one run (its exact id) and its interventions; say what was deleted."""
    with _existing(args) as store:
        run = _find(store, args.run, exact=True)
        count = len(store.interventions(run_id=run.run_id))
        store.forget(run.run_id)
    print(f"forgot run {run.run_id} ({_task(run)}, {run.run_dir}) and {count} intervention(s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Every run and intervention as one JSON document (``-``: to standard output)."""
    with _store(args) as store:
        runs = store.runs() if store is not None else []
        changes = store.interventions() if store is not None else []
    document = {
        "format": EXPORT_FORMAT,
        "exported_at": time.time(),
        "runs": [r.model_dump(mode="json") for r in runs],
        "interventions": [c.model_dump(mode="json") for c in changes],
    }
    text = json.dumps(document, indent=1) + "\n"
    if args.file == "-":
        sys.stdout.write(text)
        return 0
    _write_atomic(Path(args.file), text)
    print(f"exported {len(runs)} run(s) and {len(changes)} intervention(s) to {args.file}")
    return 0


# -- the store ------------------------------------------------------------------------------
def _url(args: argparse.Namespace) -> str:
    given = getattr(args, "memory", None)
    if given:
        return str(given)
    from autopilot.config import load_settings

    try:
        return load_settings(getattr(args, "config", None)).memory.store_url()
    except AutopilotError as exc:
        raise CliError(str(exc)) from None


def _where(args: argparse.Namespace) -> str:
    url = _url(args)
    if is_postgres(url):
        from memory.postgres import redact

        return redact(url)
    return url.removeprefix("sqlite:///")


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[MemoryStore | None]:
    """The store, opened; ``None`` for a SQLite file that does not exist yet (said once)."""
    path = _missing_file(_url(args))
    if path is not None:
        print(f"no memory store at {path} yet: the autopilot writes one as its runs end")
        yield None
        return
    with _existing(args) as store:
        yield store


@contextmanager
def _existing(args: argparse.Namespace) -> Iterator[MemoryStore]:
    """The store, opened (a SQLite file that does not exist holds no run: an error)."""
    url = _url(args)
    path = _missing_file(url)
    if path is not None:
        raise CliError(f"no run {args.run!r}: the memory store {path} does not exist yet")
    try:
        store = open_store(url)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


def _missing_file(url: str) -> Path | None:
    path = None if is_postgres(url) else Path(url.removeprefix("sqlite:///"))
    return path if path is not None and not path.exists() else None


def _find(store: MemoryStore, run_id: str, *, exact: bool) -> RunRecord:
    """The run ``run_id`` names (with ``exact=False``, a unique prefix will do)."""
    run = store.run(run_id)
    if run is not None:
        return run
    close = [r.run_id for r in store.runs() if r.run_id.startswith(run_id)]
    if not exact and len(close) == 1:
        found = store.run(close[0])
        assert found is not None
        return found
    hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
    raise CliError(f"no run {run_id!r} in the memory store (`autopilot memory list`){hint}")


def _task_runs(store: MemoryStore, task: str) -> list[RunRecord]:
    """The runs of the task named ``task`` (``Kernel(task=...)``) or with that key."""
    return [r for r in store.runs() if task in (r.fingerprint.task, r.task_key)]


def _counts(changes: list[InterventionRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.run_id] = counts.get(change.run_id, 0) + 1
    return counts


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- text -----------------------------------------------------------------------------------
def _of_task(task: str | None) -> str:
    return f" of task {task!r}" if task else ""


def _task(run: RunRecord) -> str:
    return run.fingerprint.task or run.task_key


def _started(run: RunRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(run.started_at))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _run_cells(run: RunRecord, changes: int) -> tuple[str, ...]:
    metric = run.key_metric or "-"
    if run.key_mode:
        metric += f" ({run.key_mode})"
    best, final = _number(run.best), _number(run.final)
    return (run.run_id, _task(run), _started(run), metric, best, final, str(changes))


def _run_lines(run: RunRecord) -> list[str]:
    fp = run.fingerprint
    what = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("model", fp.model), ("optimizer", fp.optimizer), ("parameters", fp.n_params),
            ("dataset size", fp.dataset_size), ("max steps", fp.max_steps),
        )
        if value is not None
    )  # fmt: skip
    ended = "-" if run.ended_at is None else f"{run.ended_at - run.started_at:.0f} s later"
    knobs = ", ".join(f"{k} {value_text(v)}" for k, v in sorted(run.start_knobs.items()))
    return [
        f"run {run.run_id}  ({run.run_dir})",
        f"  task: {fp.task or '-'}  (key {run.task_key})" + (f": {what}" if what else ""),
        f"  started: {_started(run)} UTC, ended: {ended}",
        f"  key metric: {run.key_metric or '-'} ({run.key_mode or '-'}), best "
        f"{_number(run.best)}, final {_number(run.final)}",
        f"  start knobs: {knobs or '-'}",
    ]


def _change_cells(change: InterventionRecord) -> tuple[str, ...]:
    what: str = change.op
    if change.knob is not None:
        what = f"{change.knob} {value_text(change.before)} -> {value_text(change.after)}"
    effect = "-" if change.effect_rel is None else f"{change.effect_rel:+.1%}"
    return (
        str(change.step),
        change.op,
        change.source,
        change.kind or "-",
        what,
        effect,
        change.verdict or "not measured",
    )


def _lesson_lines(run: RunRecord, found: list[Lesson]) -> list[str]:
    head = f"task {_task(run)}" + (f" (key {run.task_key})" if run.fingerprint.task else "")
    if not found:
        return [f"{head}: no measured interventions yet"]
    return [f"{head}:", *(f"  {lesson.line()}" for lesson in found)]
