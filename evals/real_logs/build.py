"""Build the real-log development set: import every listed ``trainer_state.json`` as a
recorded run with its label.

Usage: ``python -m evals.real_logs.build DIR OUT [--sources FILE]``. ``DIR`` holds the
downloaded sources as ``DIR/<owner>/<repo>/<path>`` (``LABELING.md``, "Rebuilding"); each
run is written to ``OUT/<owner>__<repo>__<path>/`` with a ``labels.json`` holding its event
(kind and onset) and where it came from. A file whose label by the written rule differs from
the committed one is refused (the copy is not the file that was labelled); a missing file is
reported and skipped.

Example:
    >>> safe_name("Owner/Repo", "checkpoint-500/trainer_state.json")
    'Owner__Repo__checkpoint-500'
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from evals.importers.huggingface import TRAINER_STATE_FILE, import_trainer_state
from evals.real_logs.label import Label, label_file
from evals.runs import LABELS_FILE, LabelEvent, Labels, RecordedRun, load_run

SOURCES = Path(__file__).with_name("sources.jsonl")


class Source(BaseModel):
    """One line of ``sources.jsonl``: where a run was read, and its committed label."""

    model_config = ConfigDict(extra="allow", frozen=True)

    repo: str
    path: str
    commit: str
    label: Label


def read_sources(path: Path = SOURCES) -> list[Source]:
    """The listed sources, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Source.model_validate_json(line) for line in lines if line.strip()]


def safe_name(repo: str, path: str) -> str:
    """A directory name for the run of ``repo``'s ``path``."""
    inside = path.removesuffix(TRAINER_STATE_FILE).removesuffix(".json").strip("/")
    name = "__".join(p for p in (repo.replace("/", "__"), inside.replace("/", "__")) if p)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def build(root: Path, out: Path, sources: list[Source]) -> tuple[list[RecordedRun], list[str]]:
    """Import each source found under ``root`` into ``out``; the runs, and one line per
    source that was missing or refused."""
    runs: list[RecordedRun] = []
    problems: list[str] = []
    for source in sources:
        file = root / source.repo / source.path
        if not file.is_file():
            problems.append(f"{source.repo}/{source.path}: missing under {root}")
            continue
        label = label_file(file)
        if label.label != source.label:
            problems.append(
                f"{source.repo}/{source.path}: the rule labels this copy {label.label}, "
                f"sources.jsonl says {source.label}; refused"
            )
            continue
        events = []
        if label.label != "healthy" and label.onset_step is not None:
            events = [LabelEvent(kind=label.label, onset_step=label.onset_step)]
        labels = Labels.model_validate(
            {
                "events": [e.model_dump() for e in events],
                "source": {"repo": source.repo, "path": source.path, "commit": source.commit},
                "numbers": label.numbers,
            }
        )
        run_dir = out / safe_name(source.repo, source.path)
        _import(file, run_dir)
        (run_dir / LABELS_FILE).write_text(labels.model_dump_json(), encoding="utf-8")
        runs.append(load_run(run_dir))
    return runs, problems


def _import(file: Path, run_dir: Path) -> None:
    """Import ``file``, also when its repository saved the Trainer's state under another
    name (the importer reads only files called ``trainer_state.json``)."""
    if file.name == TRAINER_STATE_FILE:
        import_trainer_state(file, run_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(file, Path(tmp) / TRAINER_STATE_FILE)
        import_trainer_state(Path(tmp), run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.real_logs.build", description=__doc__)
    parser.add_argument("root", type=Path, help="the downloaded sources, DIR/<owner>/<repo>/<path>")
    parser.add_argument("out", type=Path, help="where the recorded runs are written")
    parser.add_argument("--sources", type=Path, default=SOURCES)
    args = parser.parse_args(argv)
    runs, problems = build(args.root, args.out, read_sources(args.sources))
    for line in problems:
        print(line, file=sys.stderr)
    counts: dict[str, int] = {}
    for run in runs:
        kind = run.labels.events[0].kind if run.labels.events else "healthy"
        counts[kind] = counts.get(kind, 0) + 1
    repos = len({(r.labels.model_extra or {})["source"]["repo"] for r in runs})
    print(json.dumps({"runs": len(runs), "repos": repos, "labels": counts, "out": str(args.out)}))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
