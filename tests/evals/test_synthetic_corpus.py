"""The generated runs of evals/corpus/ (``evals.make_synthetic``): seeded, in the shapes they
claim, written as the generators draw them, and labelled as the written rule labels them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evals import make_corpus, make_synthetic
from evals.corpus_checks import check_rule, curves_of, hf_rows, read_curves, smoothed_argmin
from evals.make_corpus import build_generated, corpus_runs
from evals.real_logs.label import label_log_history
from evals.runs import Labels, load_run

CORPUS = Path(make_corpus.__file__).parent / "corpus"
GENERATED = {make.__name__: make() for make in make_synthetic.GENERATORS}
# trained plateaus log a noisy per-step train loss: its 5-point median still gains 13-31 %
# over the judged tail (and digits' ends at 6 % of its start, not "still high"), so the rule,
# written for a Trainer's logged means, finds them healthy
RULE_DISAGREES = {"digits_plateau", "diabetes_plateau", "synthetic_plateau"}


def _curves(name: str):
    return curves_of(GENERATED[name].records)


def _rule(name: str):
    run = GENERATED[name]
    return label_log_history(hf_rows(run.records), steps=run.info.max_steps)


def _known_disagreement(run: Path):
    reason = "trained plateau: the rule reads its noisy per-step train loss as still improving"
    return pytest.param(run, marks=pytest.mark.xfail(strict=True, reason=reason), id=run.name)


@pytest.mark.parametrize(
    "run",
    [_known_disagreement(r) if r.name in RULE_DISAGREES else r for r in corpus_runs(CORPUS)],
    ids=lambda p: p.name,
)
def test_every_corpus_label_agrees_with_the_written_rule(run):
    recorded = load_run(run)
    verdict = check_rule(recorded.records(), recorded.labels, steps=recorded.info.max_steps)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("name", GENERATED)
def test_the_committed_run_is_what_its_generator_draws(name):
    run, recorded = GENERATED[name], load_run(CORPUS / name)
    lines = "".join(record.to_line() for record in run.records)
    assert (CORPUS / name / "metrics.jsonl").read_text(encoding="utf-8") == lines
    assert recorded.labels == run.labels and recorded.info == run.info
    assert run.info.source == "generated" and run.info.max_steps == run.records[-1].step


def test_generators_are_deterministic_and_seeded():
    make = make_synthetic.warmup_spike_healthy
    assert make().records == make(4).records
    assert make(4).records != make(5).records


@pytest.mark.parametrize("name", GENERATED)
def test_a_generated_run_logs_like_a_trainer(name):
    run = GENERATED[name]
    steps = [r.step for r in run.records]
    every, evals = run.info.logging_steps, run.info.eval_steps
    assert every and evals and steps[0] == 1 and all(s % every == 0 for s in steps[1:])
    assert all(r.step % evals == 0 for r in run.records if "val/loss" in r.metrics)
    assert all(round(r.metrics["train/loss"], 4) == r.metrics["train/loss"] for r in run.records)


def test_the_long_run_still_improves_slowly_to_its_end():
    steps, val = _curves("long_slow_healthy")["val/loss"]
    assert steps[-1] == 100_000 and len(val) == 100
    assert val[-1] < 0.8 * val[49]  # the second half still gains >20 %
    assert val[-10:].mean() < val[-20:-10].mean()
    assert abs(np.diff(val[-20:])).mean() < 0.01 * val[-1]  # ~noise-sized steps per eval


def test_the_decay_runs_lr_goes_to_zero_and_its_loss_flattens():
    curves = _curves("decay_tail_healthy")
    lr = curves["lr"][1]
    assert lr[-1] <= 0.01 * lr.max()
    steps, val = curves["val/loss"]
    tail = val[steps >= 0.8 * steps[-1]]
    assert abs(tail[-1] - tail[0]) < 0.1 * (val[0] - val[-1])


def test_the_sparse_overfitting_run_is_jagged_and_rises_past_its_minimum():
    curves = _curves("sparse_jagged_overfitting")
    steps, val = curves["val/loss"]
    assert 12 <= len(val) <= 20 and (np.diff(val) > 0).sum() >= 4
    onset = GENERATED["sparse_jagged_overfitting"].labels.events[0].onset_step
    assert onset == smoothed_argmin(curves) and steps[2] < onset < steps[-4]
    assert _rule("sparse_jagged_overfitting").numbers["eval_end_over_min"] >= 0.2
    train_steps, train = curves["train/loss"]
    assert train[-5:].mean() < 0.5 * train[train_steps <= onset][-5:].mean()


def test_the_near_zero_run_bumps_but_stays_healthy():
    curves = _curves("near_zero_finetune_healthy")
    train = curves["train/loss"][1]
    assert train.min() < 0.005
    late = train[np.argmax(train < 0.005) :]
    assert ((late >= 0.03) & (late <= 0.05)).sum() >= 5
    val = curves["val/loss"][1]
    assert val[-1] < 1.1 * val.min()


def test_the_warmup_spike_recovers_within_50_steps():
    steps, train = _curves("warmup_spike_healthy")["train/loss"]
    before = train[steps == 500][0]
    spike = (steps > 500) & (steps <= 550)
    assert train[spike].max() >= 2 * before
    assert train[steps == 550][0] < 1.2 * before and train[steps > 550].max() < 1.5 * before


def test_the_drifting_run_loses_a_little_loss_and_gains_accuracy():
    curves = _curves("drift_rising_accuracy_healthy")
    rise = _rule("drift_rising_accuracy_healthy").numbers["eval_end_over_min"]
    assert isinstance(rise, float) and 0.03 <= rise < 0.15  # under the rule's 15 %
    _, val = curves["val/loss"]
    assert np.argmin(val) < len(val) // 2
    acc = curves["val/accuracy"][1]
    assert acc[-5:].mean() > acc[5:10].mean() > acc[:5].mean()


def test_the_sparse_plateau_stops_where_its_lr_is_cut():
    curves = _curves("sparse_plateau")
    onset = GENERATED["sparse_plateau"].labels.events[0].onset_step
    steps, lr = curves["lr"]
    assert lr[steps == onset][0] <= 1e-3 * lr.max() and 15 <= len(curves["val/loss"][1]) <= 25
    assert _rule("sparse_plateau").numbers["train_end_over_start"] >= 0.5  # stuck high


def test_the_divergence_blows_up_at_its_onset_and_stays_up():
    onset = GENERATED["finetune_divergence"].labels.events[0].onset_step
    assert _rule("finetune_divergence").numbers["blowup_step"] == onset
    steps, train = _curves("finetune_divergence")["train/loss"]
    assert train[steps >= onset + 30].min() > 2 * train[steps < onset].min()


def test_a_run_whose_label_the_rule_refuses_is_not_written(tmp_path):
    run = GENERATED["drift_rising_accuracy_healthy"]
    wrong = Labels.model_validate({"events": [{"kind": "overfitting", "onset_step": 800}]})
    assert "healthy" in check_rule(run.records, wrong, steps=run.info.max_steps).reason
    relabelled = make_synthetic.GeneratedRun(
        name=run.name, task=run.task, records=run.records, labels=wrong, info=run.info
    )
    assert not build_generated(relabelled, tmp_path).ok
    assert not (tmp_path / run.name).exists()


def test_synthetic_only_writes_the_generated_runs_and_lists_them(tmp_path, capsys):
    assert make_corpus.main(["--out", str(tmp_path), "--synthetic-only"]) == 0
    assert sorted(p.name for p in corpus_runs(tmp_path)) == sorted(GENERATED)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert all(f"| {name} | generated |" in readme for name in GENERATED)
    assert read_curves(tmp_path / "sparse_plateau").keys() == _curves("sparse_plateau").keys()
    assert "DROPPED" not in capsys.readouterr().out
