"""The shipped corpus of evals/corpus/: every run parses, is labelled, and its label holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals import make_corpus
from evals.corpus_checks import check_label, read_curves
from evals.make_corpus import corpus_runs
from evals.runs import Labels
from kernel import MetricRecord

CORPUS = Path(make_corpus.__file__).parent / "corpus"
RUNS = corpus_runs(CORPUS)


def _labels(run: Path) -> Labels:
    return Labels.model_validate_json((run / "labels.json").read_text(encoding="utf-8"))


def test_the_corpus_is_small_and_has_every_kind():
    kinds = {e.kind for run in RUNS for e in _labels(run).events}
    healthy = [run for run in RUNS if not _labels(run).events]
    assert len(RUNS) >= 10
    assert kinds == {"divergence", "plateau", "overfitting"} and healthy
    assert sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file()) < 5 * 2**20


def test_the_readme_lists_every_run():
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert all(f"| {run.name} |" in readme for run in RUNS)


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_each_line_is_a_kernel_record_with_increasing_steps(run):
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [MetricRecord.model_validate_json(line) for line in lines]
    steps = [r.step for r in records]
    assert steps == sorted(set(steps)) and steps[0] == 1
    assert all({"train/loss", "lr", "grad/norm"} <= r.metrics.keys() for r in records)
    assert any("val/loss" in r.metrics for r in records)


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_labels_are_valid_and_within_the_run(run):
    raw = json.loads((run / "labels.json").read_text(encoding="utf-8"))
    assert set(raw) == {"events"}
    last = read_curves(run)["train/loss"][0][-1]
    assert all(1 <= e.onset_step < last for e in _labels(run).events)


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_the_label_holds_on_the_shipped_curve(run):
    verdict = check_label(read_curves(run), _labels(run))
    assert verdict.ok, verdict.reason


def test_the_checks_reject_a_wrong_label():
    curves = read_curves(CORPUS / "digits_healthy")
    wrong = Labels.model_validate({"events": [{"kind": "divergence", "onset_step": 400}]})
    assert not check_label(curves, wrong).ok
    diverged = read_curves(CORPUS / "digits_divergence")
    assert not check_label(diverged, Labels()).ok


def test_nonfinite_values_read_back_as_floats():
    curves = read_curves(CORPUS / "diabetes_divergence")
    assert not np.isfinite(curves["train/loss"][1]).all()
