"""Build the labelled corpus of evals/corpus/: runs trained under the kernel, and runs generated
in the shapes real Hugging Face Trainer logs show (``evals.make_synthetic``).

Tiny PyTorch models train on scikit-learn's bundled datasets (digits, breast cancer,
diabetes; no download) and on a seeded synthetic task. Pathologies are injected at a known
step (learning rate multiplied up: divergence; learning rate collapsed: plateau) or arise
naturally (tiny train split, big MLP, no regularisation: overfitting, onset at the minimum of
the smoothed validation loss). Every label is checked against its curve and a run whose
label does not hold is dropped, with the reason printed.

A generated run is written only when its label passes both the corpus's checks and the written
rule that labels real logs (``evals/real_logs/LABELING.md``); it also holds a ``run.json``
(``max_steps``, ``eval_steps``, ``logging_steps``). Generated runs are the same bytes on every
build; trained runs are not (their wall times, and torch's kernels across versions).

A run directory holds the kernel's ``metrics.jsonl`` and ``labels.json``
(``{"events": [{"kind": "divergence", "onset_step": 500}]}``; no events: healthy).

Rebuild: ``python -m evals.make_corpus --out evals/corpus`` (``--quick``: one trained run per
kind; ``--synthetic-only``: the generated runs only, leaving the trained ones as they are).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from evals.corpus_checks import (
    KEY_METRIC,
    Curve,
    Verdict,
    check_label,
    check_rule,
    curves_of,
    read_curves,
    smoothed_argmin,
)
from evals.make_synthetic import GENERATORS, GeneratedRun
from evals.runs import LabelEvent, Labels, write_run
from evals.tasks.datasets import TabularDataset, load_split
from evals.tasks.models import mlp

Kind = Literal["plateau", "divergence", "overfitting"]
MAX_CORPUS_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One corpus run: task, optimiser and the pathology to inject (if any)."""

    name: str
    task: TabularDataset
    label: Kind | Literal["healthy"]
    steps: int = 1000
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3e-3
    onset: int | None = None  # injected pathologies: the lr becomes lr_after from here on
    lr_after: float = 0.0
    hidden: int = 64
    depth: int = 1
    weight_decay: float = 0.0
    n_train: int | None = None  # a tiny train split for overfitting
    eval_every: int = 10
    seed: int = 0
    quick: bool = False


SPECS = [
    RunSpec(name="digits_healthy", task="digits", label="healthy", steps=800,
            weight_decay=1e-4, quick=True),
    RunSpec(name="digits_divergence", task="digits", label="divergence", steps=900,
            onset=450, lr_after=0.3, seed=1, quick=True),
    RunSpec(name="digits_plateau", task="digits", label="plateau", optimizer="sgd", lr=0.02,
            steps=800, onset=300, lr_after=1e-7, seed=2, quick=True),
    RunSpec(name="digits_overfitting", task="digits", label="overfitting", n_train=60,
            hidden=256, depth=2, lr=3e-4, steps=1200, seed=3, quick=True),
    RunSpec(name="breast_cancer_healthy", task="breast_cancer", label="healthy", steps=700,
            lr=1e-3, weight_decay=1e-3, eval_every=20),
    RunSpec(name="breast_cancer_divergence", task="breast_cancer", label="divergence",
            optimizer="sgd", lr=0.01, steps=800, onset=400, lr_after=1.0, eval_every=20),
    RunSpec(name="breast_cancer_overfitting", task="breast_cancer", label="overfitting",
            n_train=30, hidden=256, depth=2, lr=1e-4, steps=1000, seed=1),
    RunSpec(name="diabetes_healthy", task="diabetes", label="healthy", steps=800, lr=1e-3,
            weight_decay=1e-3),
    RunSpec(name="diabetes_divergence", task="diabetes", label="divergence", optimizer="sgd",
            lr=0.01, steps=800, onset=500, lr_after=0.5, seed=1),
    RunSpec(name="diabetes_plateau", task="diabetes", label="plateau", lr=3e-4, steps=800,
            onset=250, lr_after=1e-7, seed=2),
    RunSpec(name="diabetes_overfitting", task="diabetes", label="overfitting", n_train=40,
            hidden=256, depth=2, lr=5e-5, steps=1200, seed=3),
    RunSpec(name="synthetic_healthy", task="synthetic", label="healthy", steps=1000,
            weight_decay=1e-4, eval_every=20),
    RunSpec(name="synthetic_divergence", task="synthetic", label="divergence", steps=1000,
            lr=1e-3, onset=600, lr_after=0.1, seed=1, eval_every=20),
    RunSpec(name="synthetic_plateau", task="synthetic", label="plateau", optimizer="sgd",
            lr=0.01, steps=1000, onset=400, lr_after=1e-7, seed=2),
]  # fmt: skip


def _optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def train(spec: RunSpec, run_dir: Path) -> None:
    """Train ``spec`` under a ``Kernel`` in ``run_dir`` (seeded, unpaced)."""
    from kernel import Kernel, KernelSettings

    torch.manual_seed(spec.seed)
    split = load_split(spec.task, spec.seed, spec.n_train)
    model = mlp(split.x_train.shape[1], spec.hidden, spec.depth, split.n_out)
    optimizer = _optimizer(spec, model)
    batch = min(64, len(split.x_train))
    gen = torch.Generator().manual_seed(spec.seed)
    settings = KernelSettings(grad_norm_interval_s=0.0)
    with Kernel(run_dir, optimizer=optimizer, key_metric=KEY_METRIC, settings=settings) as k:
        for step in range(1, spec.steps + 1):
            injected = spec.onset is not None and step >= spec.onset
            lr = spec.lr_after if injected else spec.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = torch.randint(len(split.x_train), (batch,), generator=gen)
            loss = split.loss(model(split.x_train[idx]), split.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            k.clip_grad_norm_(model.parameters())
            optimizer.step()
            metrics: dict[str, float | torch.Tensor] = {"train/loss": loss.detach(), "lr": lr}
            if step % spec.eval_every == 0:
                metrics.update(split.evaluate(model))
            k.log(step, metrics)
            k.step(step)


def _labels(spec: RunSpec, curves: dict[str, Curve]) -> Labels:
    if spec.label == "healthy":
        return Labels()
    onset = smoothed_argmin(curves) if spec.label == "overfitting" else spec.onset
    assert onset is not None, f"{spec.name}: an injected {spec.label} needs an onset"
    return Labels(events=[LabelEvent(kind=spec.label, onset_step=onset)])


def build_run(spec: RunSpec, out: Path) -> Verdict:
    """Train, label and check one run; keep it under ``out/<name>`` only if its label holds."""
    target = out / spec.name
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        train(spec, Path(tmp))
        curves = read_curves(Path(tmp))
        labels = _labels(spec, curves)
        verdict = check_label(curves, labels)
        if verdict.ok:
            target.mkdir(parents=True)
            shutil.copy(Path(tmp) / "metrics.jsonl", target / "metrics.jsonl")
            (target / "labels.json").write_text(labels.model_dump_json() + "\n")
    return verdict


def build_generated(run: GeneratedRun, out: Path) -> Verdict:
    """Check one generated run's label (the corpus checks, then the written rule); write it
    under ``out/<name>`` only if both hold."""
    target = out / run.name
    shutil.rmtree(target, ignore_errors=True)
    verdict = check_label(curves_of(run.records), run.labels)
    if verdict.ok:
        verdict = check_rule(run.records, run.labels, steps=run.info.max_steps)
    if verdict.ok:
        write_run(target, run.records, run.labels, info=run.info)
    return verdict


def corpus_runs(corpus: Path) -> list[Path]:
    """The run directories of a corpus (those with a ``labels.json``)."""
    return sorted(p.parent for p in corpus.glob("*/labels.json"))


def _made(specs: list[RunSpec], generated: list[GeneratedRun]) -> dict[str, tuple[str, str, int]]:
    """How each known run was made: ``name -> (trained | generated, task, steps)``."""
    made = {s.name: ("trained", str(s.task), s.steps) for s in specs}
    for run in generated:
        made[run.name] = ("generated", run.task, run.info.max_steps or run.records[-1].step)
    return made


def write_readme(corpus: Path, specs: list[RunSpec], generated: list[GeneratedRun]) -> int:
    """Write the corpus README (a table of its runs); return the corpus size in bytes."""
    made = _made(specs, generated)
    rows, total = [], 0
    for run in corpus_runs(corpus):
        labels = Labels.model_validate_json((run / "labels.json").read_text())
        size = sum(f.stat().st_size for f in run.iterdir())
        total += size
        event = labels.events[0] if labels.events else None
        how, task, steps = made.get(run.name, ("?", "?", "?"))
        kind, onset = (event.kind, event.onset_step) if event else ("healthy", "-")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        evals = sum(f'"{KEY_METRIC}"' in line for line in lines)
        rows.append(f"| {run.name} | {how} | {task} | {kind} | {onset} | {steps} | {evals} "
                    f"| {size / 1024:.0f} KiB |")  # fmt: skip
    head = [
        "# Labelled training-run corpus",
        "",
        "Generated by `python -m evals.make_corpus --out evals/corpus`; do not edit by hand.",
        "Each run: the kernel's `metrics.jsonl` and `labels.json` (no events: healthy).",
        "Trained runs train tiny models under the kernel and log every step; generated runs",
        "(`evals/make_synthetic.py`, seeded) draw the shapes of real Hugging Face Trainer logs,",
        "hold a `run.json` (`max_steps`, `eval_steps`, `logging_steps`) and carry the label that",
        "the written rule of `evals/real_logs/LABELING.md` gives them.",
        "",
        "| run | made | task | kind | onset | steps | evals | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    foot = ["", f"Total: {len(rows)} runs, {total / 1024:.0f} KiB.", ""]
    (corpus / "README.md").write_text("\n".join(head + rows + foot))
    return total


def _report(name: str, verdict: Verdict) -> Verdict:
    print(f"{name:30s} {'kept' if verdict.ok else 'DROPPED: ' + verdict.reason}")
    return verdict


def main(argv: list[str] | None = None) -> int:
    """Command line: build the corpus, print what was kept and dropped."""
    parser = argparse.ArgumentParser(prog="python -m evals.make_corpus")
    parser.add_argument("--out", type=Path, default=Path("evals/corpus"))
    parser.add_argument("--quick", action="store_true", help="one trained run per kind only")
    parser.add_argument("--only", nargs="*", help="names of the runs to build")
    parser.add_argument(
        "--synthetic-only", action="store_true", help="the generated runs only (no training)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wanted = (lambda name: name in args.only) if args.only else (lambda name: True)
    specs = [] if args.synthetic_only else [s for s in SPECS if s.quick or not args.quick]
    generated = [make() for make in GENERATORS]
    args.out.mkdir(parents=True, exist_ok=True)
    started, verdicts = time.monotonic(), []
    for spec in (s for s in specs if wanted(s.name)):
        verdicts.append(_report(spec.name, build_run(spec, args.out)))
    for run in (r for r in generated if wanted(r.name)):
        verdicts.append(_report(run.name, build_generated(run, args.out)))
    dropped = sum(not v.ok for v in verdicts)
    total = write_readme(args.out, SPECS, generated)
    print(f"{len(verdicts) - dropped} kept, {dropped} dropped, {total / 1024:.0f} KiB, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    if total > MAX_CORPUS_BYTES:
        print(f"corpus is {total} bytes, over the {MAX_CORPUS_BYTES} limit: trim SPECS")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
