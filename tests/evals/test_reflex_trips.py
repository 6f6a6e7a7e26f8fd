"""The kernel's reflexes on the labelled corpus: no healthy run trips; the trained runs that
diverge do, at or after their onset."""

from __future__ import annotations

from pathlib import Path

from evals.reflex_trips import find_runs, main, run_trips

CORPUS = Path(__file__).resolve().parents[2] / "evals" / "corpus"


def test_no_healthy_corpus_run_trips_and_the_trained_divergences_do(capsys) -> None:
    results = {r.run: r for r in map(run_trips, find_runs([CORPUS]))}
    assert len(results) >= 22
    assert not [name for name, r in results.items() if r.healthy and r.trips]
    for name in ("digits_divergence", "breast_cancer_divergence", "diabetes_divergence"):
        first = results[name].trips[0]
        assert first.step >= 400 and first.cause == "spike", name
    assert main([str(CORPUS)]) == 0
    assert "healthy: 9, of which tripped: 0" in capsys.readouterr().out
