"""Building the real-log development set (``evals.real_logs.build``) from a tmp directory of
synthetic ``trainer_state.json`` files laid out as ``DIR/<owner>/<repo>/<path>``, and the
onsets the labelling rule gives (``RunLabel.onset_step``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from evals.real_logs.build import Source, build, main, read_sources, safe_name
from evals.real_logs.label import Label, label_log_history
from evals.runs import LABELS_FILE, load_run

COMMIT = "0" * 40


def history(train: list[float], evals: list[float]) -> list[dict[str, Any]]:
    """Train entries every 10 steps, evals every 50, as the Trainer's ``log_history``."""
    rows: list[dict[str, Any]] = [
        {"step": (i + 1) * 10, "loss": v, "learning_rate": 1e-4} for i, v in enumerate(train)
    ]
    rows += [{"step": (i + 1) * 50, "eval_loss": v} for i, v in enumerate(evals)]
    return sorted(rows, key=lambda r: r["step"])


def decay(n: int, start: float, end: float) -> list[float]:
    return [end + (start - end) * math.exp(-4 * i / n) for i in range(n)]


HEALTHY = history(decay(100, 2.0, 0.2), decay(20, 2.1, 0.4))
OVERFIT_EVALS = [2.0, 1.5, 1.2, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5]
OVERFITTING = history(decay(50, 2.0, 0.1), OVERFIT_EVALS)
OVERFIT_MIN_STEP = 200  # the 4th evaluation, 50 steps apart


def write_state(root: Path, repo: str, path: str, rows: list[dict[str, Any]]) -> None:
    file = root / repo / path
    file.parent.mkdir(parents=True, exist_ok=True)
    steps = max(r["step"] for r in rows)
    state = {"global_step": steps, "max_steps": steps, "log_history": rows}
    file.write_text(json.dumps(state), encoding="utf-8")


def source(repo: str, path: str, label: Label) -> Source:
    return Source(repo=repo, path=path, commit=COMMIT, label=label)


def write_sources(file: Path, sources: list[Source]) -> Path:
    file.write_text("".join(s.model_dump_json() + "\n" for s in sources), encoding="utf-8")
    return file


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    root = tmp_path / "downloads"
    write_state(root, "alice/healthy-run", "trainer_state.json", HEALTHY)
    write_state(root, "bob/overfit", "out/checkpoint-500/trainer_state.json", OVERFITTING)
    return root


SOURCES = [
    source("alice/healthy-run", "trainer_state.json", "healthy"),
    source("bob/overfit", "out/checkpoint-500/trainer_state.json", "overfitting"),
]


def test_build_imports_each_source_with_its_label_event_and_source(
    downloads: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    runs, problems = build(downloads, out, read_sources(write_sources(tmp_path / "s", SOURCES)))
    assert problems == []
    assert sorted(r.name for r in runs) == [
        "alice__healthy-run",
        "bob__overfit__out__checkpoint-500",
    ]
    healthy, overfit = (load_run(out / name) for name in sorted(r.name for r in runs))
    assert healthy.labels.events == []
    [event] = overfit.labels.events
    assert (event.kind, event.onset_step) == ("overfitting", OVERFIT_MIN_STEP)
    extra = overfit.labels.model_extra or {}
    assert extra["source"] == {
        "repo": "bob/overfit",
        "path": "out/checkpoint-500/trainer_state.json",
        "commit": COMMIT,
    }
    assert extra["numbers"]["eval_min_step"] == OVERFIT_MIN_STEP
    assert [r.metrics.get("val/loss") for r in overfit.records() if "val/loss" in r.metrics] == (
        OVERFIT_EVALS
    )


def test_a_source_whose_committed_label_differs_from_the_rule_is_refused(
    downloads: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    wrong = source("bob/overfit", "out/checkpoint-500/trainer_state.json", "healthy")
    runs, problems = build(downloads, out, [wrong])
    assert runs == []
    assert problems == [
        "bob/overfit/out/checkpoint-500/trainer_state.json: the rule labels this copy "
        "overfitting, sources.jsonl says healthy; refused"
    ]
    assert not (out / "bob__overfit__out__checkpoint-500").exists()


def test_a_missing_file_is_reported_and_the_others_are_built(
    downloads: Path, tmp_path: Path
) -> None:
    gone = source("carol/gone", "trainer_state.json", "healthy")
    runs, problems = build(downloads, tmp_path / "out", [gone, SOURCES[0]])
    assert [r.name for r in runs] == ["alice__healthy-run"]
    assert problems == [f"carol/gone/trainer_state.json: missing under {downloads}"]


def test_a_file_saved_under_another_name_is_imported(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    write_state(root, "dave/odd", "x/__init__.py", OVERFITTING)
    runs, problems = build(
        root, tmp_path / "out", [source("dave/odd", "x/__init__.py", "overfitting")]
    )
    assert problems == []
    [run] = runs
    assert run.name == safe_name("dave/odd", "x/__init__.py")
    assert (run.path / LABELS_FILE).is_file()
    assert len(run.records()) == len({r["step"] for r in OVERFITTING})
    assert [e.onset_step for e in run.labels.events] == [OVERFIT_MIN_STEP]


def test_main_prints_the_counts_and_fails_when_a_source_is_refused(
    downloads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = write_sources(tmp_path / "sources.jsonl", SOURCES)
    out = tmp_path / "out"
    assert main([str(downloads), str(out), "--sources", str(sources)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "runs": 2,
        "repos": 2,
        "labels": {"healthy": 1, "overfitting": 1},
        "out": str(out),
    }
    refused = write_sources(
        tmp_path / "bad.jsonl", [source("alice/healthy-run", "trainer_state.json", "plateau")]
    )
    assert main([str(downloads), str(tmp_path / "out2"), "--sources", str(refused)]) == 1
    assert "refused" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("repo", "path", "name"),
    [
        ("Owner/Repo", "trainer_state.json", "Owner__Repo"),
        ("Owner/Repo", "checkpoint-500/trainer_state.json", "Owner__Repo__checkpoint-500"),
        ("Owner/Repo", "logs/state.json", "Owner__Repo__logs__state"),
        ("o/r", "x/__init__.py", "o__r__x____init__.py"),
        ("o/r", "my run+1/trainer_state.json", "o__r__my_run_1"),
    ],
)
def test_safe_name(repo: str, path: str, name: str) -> None:
    assert safe_name(repo, path) == name


# --- onsets ------------------------------------------------------------------------------


def test_a_plateau_onset_is_where_progress_stopped() -> None:
    train = decay(30, 2.0, 1.6) + [1.6] * 30  # within 1 % of its floor from about step 260
    label = label_log_history(history(train, []))
    assert label.label == "plateau"
    assert label.onset_step is not None and 200 <= label.onset_step <= 310
    assert label.onset_step == label.numbers["plateau_from_step"]


def test_a_curve_flat_from_the_start_has_an_early_plateau_onset() -> None:
    train = [1.6 + 0.001 * (i % 2) for i in range(60)]
    label = label_log_history(history(train, []))
    assert label.label == "plateau"
    assert label.onset_step is not None and label.onset_step <= 30


def test_the_onsets_of_the_other_labels() -> None:
    assert label_log_history(HEALTHY).onset_step is None
    assert label_log_history(OVERFITTING).onset_step == OVERFIT_MIN_STEP
    train = decay(50, 2.0, 0.5)
    train[30] = math.nan
    diverged = label_log_history(history(train, []))
    assert (diverged.label, diverged.onset_step) == ("divergence", 310)
