"""Generated runs of evals/corpus/: the curve shapes that real Hugging Face Trainer logs show.

The trained runs of the corpus (``evals.make_corpus``) log every step of a short run; real
``trainer_state.json`` logs are long, sparse, scheduled and noisy, and detectors tuned on the
trained runs fail on them. Each function here draws one such shape with seeded numpy (no
training: 100,000 steps do not train on a CPU during a build) and returns it as the kernel's
metric records, named as the live ``AutopilotTrainerCallback`` records a Trainer's logs
(``train/loss``, ``grad/norm``, ``lr``, ``val/loss``, ``val/accuracy``), with the label it was
drawn for and its ``run.json`` (``RunInfo``).

As a Trainer logs: the train loss at step 1 (``logging_first_step``) and every
``logging_steps``, as the mean of the per-step losses since the last log, rounded to 4
decimals; ``grad/norm`` and ``lr`` of that step; an evaluation every ``eval_steps`` (a multiple
of ``logging_steps``), merged into the train record of its step. The lr warms up and follows
an HF schedule; the loss is a function of the area under the lr, so progress stalls as the lr
goes to 0, and each per-step loss carries batch noise.

``python -m evals.make_corpus`` checks each run's label (``evals.corpus_checks``: the corpus's
own checks and the written rule of ``evals/real_logs/LABELING.md``) before writing it.

Example:
    >>> run = decay_tail_healthy()
    >>> run.name, run.info.max_steps, run.info.eval_steps, run.labels.healthy
    ('decay_tail_healthy', 3000, 200, True)
    >>> run.records == decay_tail_healthy().records  # seeded: the same records every time
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evals.corpus_checks import curves_of, smoothed_argmin
from evals.runs import LabelEvent, Labels, RunInfo
from kernel import MetricRecord

Kind = Literal["plateau", "divergence", "overfitting"]
SOURCE = "generated"  # run.json's source for every run made here
T0 = 1_790_000_000.0  # wall_time of step 0, the same for every run (reproducible files)


@dataclass(frozen=True, kw_only=True)
class Cadence:
    """A Trainer's horizon and cadence: ``max_steps``, ``logging_steps``, ``eval_steps``."""

    max_steps: int
    logging_steps: int
    eval_steps: int
    sec_per_step: float = 0.2

    def __post_init__(self) -> None:
        if self.eval_steps % self.logging_steps:
            raise ValueError(
                f"eval_steps must be a multiple of logging_steps ({self.logging_steps}), "
                f"got {self.eval_steps}"
            )

    @property
    def logged(self) -> np.ndarray:
        """The logged train steps: 1, then every ``logging_steps``."""
        every = np.arange(self.logging_steps, self.max_steps + 1, self.logging_steps)
        return np.unique(np.r_[1, every])

    @property
    def evals(self) -> np.ndarray:
        """The evaluated steps."""
        return np.arange(self.eval_steps, self.max_steps + 1, self.eval_steps)


@dataclass(frozen=True, kw_only=True)
class GeneratedRun:
    """One generated corpus run: its records, the label it was drawn for, its ``run.json``."""

    name: str
    task: str  # what it imitates, for the corpus README
    records: list[MetricRecord]
    labels: Labels
    info: RunInfo


def schedule(
    c: Cadence,
    peak: float,
    warmup: int,
    decay: Literal["linear", "cosine", "constant"],
    floor: float = 0.0,
) -> np.ndarray:
    """The lr of every step ``1..max_steps``: linear warm-up to ``peak``, then HF's linear or
    cosine decay to ``floor * peak`` at ``max_steps`` (or constant)."""
    t = np.arange(1, c.max_steps + 1, dtype=float)
    frac = np.clip((t - warmup) / max(c.max_steps - warmup, 1), 0.0, 1.0)
    after = {"linear": 1 - frac, "cosine": 0.5 * (1 + np.cos(np.pi * frac))}.get(decay)
    decayed = floor + (1 - floor) * (np.ones_like(t) if after is None else after)
    return peak * np.where(t < warmup, t / max(warmup, 1), decayed)


def area(lr: np.ndarray) -> np.ndarray:
    """Progress per step: the area under the lr, in steps at its peak."""
    return np.cumsum(lr) / lr.max()


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise (slow drifts: data order, a hard shard)."""
    z = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = z[0]
    for i in range(1, n):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho**2) * z[i]
    return out


def train_log(
    rng: np.random.Generator,
    c: Cadence,
    clean: np.ndarray,
    batch_sigma: float | np.ndarray,
    drift_sigma: float = 0.0,
) -> np.ndarray:
    """The logged train loss: the per-step ``clean`` loss with lognormal batch noise (its
    sigma: one number or one per step), averaged since the previous log as the Trainer logs
    it, with a slow drift across logs."""
    per_step = clean * np.exp(batch_sigma * rng.standard_normal(len(clean)) - batch_sigma**2 / 2)
    sums = np.r_[0.0, np.cumsum(per_step)]
    ends = c.logged
    starts = np.r_[0, ends[:-1]]
    mean = (sums[ends] - sums[starts]) / (ends - starts)
    return mean * np.exp(drift_sigma * _ar1(rng, len(ends), 0.9))


def eval_log(rng: np.random.Generator, c: Cadence, clean: np.ndarray, sigma: float) -> np.ndarray:
    """The eval loss at each evaluation: the per-step ``clean`` loss with relative noise."""
    noisy = clean[c.evals - 1] * (1 + sigma * rng.standard_normal(len(c.evals)))
    return noisy.astype(np.float32).astype(float)  # a float32 loss, as a tensor's .item()


def grad_norm(rng: np.random.Generator, train: np.ndarray, scale: float) -> np.ndarray:
    """A pre-clip gradient norm that follows the loss, with step-to-step noise."""
    return scale * np.sqrt(train / train[0]) * np.exp(0.25 * rng.standard_normal(len(train)))


def accuracy(rng: np.random.Generator, c: Cadence, clean: np.ndarray, examples: int) -> np.ndarray:
    """The eval accuracy at each evaluation, over ``examples`` examples: the per-step
    ``clean`` accuracy with binomial noise."""
    return rng.binomial(examples, np.clip(clean[c.evals - 1], 0.0, 1.0)) / examples


def records(
    c: Cadence,
    train: np.ndarray,
    lr: np.ndarray,
    grad: np.ndarray,
    evals: dict[str, np.ndarray],
) -> list[MetricRecord]:
    """The kernel records of a run: one per logged step, with the evaluation of that step."""
    at = {int(s): i for i, s in enumerate(c.evals)}
    eval_s = 0.05 * c.eval_steps * c.sec_per_step  # an evaluation pauses training
    out = []
    for i, step in enumerate(int(s) for s in c.logged):
        metrics = {
            "train/loss": round(float(train[i]), 4),
            "grad/norm": _f32(grad[i]),
            "lr": float(lr[step - 1]),
        }
        if step in at:
            metrics.update({name: float(values[at[step]]) for name, values in evals.items()})
        done = np.searchsorted(c.evals, step, side="right")
        wall = T0 + step * c.sec_per_step + done * eval_s
        out.append(MetricRecord(step=step, wall_time=round(wall, 3), metrics=metrics))
    return out


def _f32(value: float) -> float:
    return float(np.float32(value))  # what a float32 tensor's .item() gives


def _run(
    name: str,
    task: str,
    c: Cadence,
    recs: list[MetricRecord],
    kind: Kind | None = None,
    onset: int | None = None,
) -> GeneratedRun:
    events = []
    if kind is not None:
        if onset is None:
            raise ValueError(f"a {kind} run needs an onset step, got None")
        events.append(LabelEvent(kind=kind, onset_step=onset))
    info = RunInfo(
        source=SOURCE, max_steps=c.max_steps, eval_steps=c.eval_steps, logging_steps=c.logging_steps
    )
    return GeneratedRun(name=name, task=task, records=recs, labels=Labels(events=events), info=info)


def long_slow_healthy(seed: int = 0) -> GeneratedRun:
    """A 100,000-step run at a constant lr after warm-up, train loss logged every 100 steps,
    eval every 1,000: the eval loss still falls ~27 % over the second half, ~0.3 % per eval,
    about its noise."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=100_000, logging_steps=100, eval_steps=1000, sec_per_step=0.45)
    lr = schedule(c, peak=3e-4, warmup=2000, decay="constant")
    clean = 0.05 + 6.5 * (1 + area(lr) / 200) ** -0.55
    train = train_log(rng, c, clean, batch_sigma=0.2, drift_sigma=0.01)
    val = eval_log(rng, c, 1.02 * clean, sigma=0.003)
    grad = grad_norm(rng, train, scale=1.2) + 0.15
    recs = records(c, train, lr, grad, {"val/loss": val})
    return _run("long_slow_healthy", "seq2seq pre-training, constant lr", c, recs)


def decay_tail_healthy(seed: int = 1) -> GeneratedRun:
    """A text-classification fine-tune whose lr decays linearly to 0 (the Trainer's
    default): the loss flattens over the last ~20 % because the lr is gone, not stuck."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=3000, logging_steps=10, eval_steps=200, sec_per_step=0.25)
    lr = schedule(c, peak=5e-5, warmup=180, decay="linear")
    progress = area(lr)
    train = train_log(rng, c, 0.08 + 1.02 * (1 + progress / 60) ** -0.9, batch_sigma=0.35)
    val = eval_log(rng, c, 0.3 + 0.8 * (1 + progress / 80) ** -0.8, sigma=0.01)
    acc = accuracy(rng, c, 0.9 - 0.55 * (1 + progress / 80) ** -0.8, examples=2000)
    recs = records(c, train, lr, grad_norm(rng, train, 6.0), {"val/loss": val, "val/accuracy": acc})
    return _run("decay_tail_healthy", "classifier fine-tune, linear lr to 0", c, recs)


def sparse_jagged_overfitting(seed: int = 2) -> GeneratedRun:
    """A 16-epoch fine-tune on a small set, one jagged evaluation per epoch: the eval loss
    bottoms out mid-run and ends >=20 % above it while the train loss keeps falling."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=2000, logging_steps=25, eval_steps=125, sec_per_step=0.3)
    lr = schedule(c, peak=3e-5, warmup=100, decay="linear")
    progress = area(lr)
    train = train_log(rng, c, 0.015 + 1.1 * np.exp(-progress / 260), batch_sigma=0.4)
    memorised = np.clip(progress - 500, 0, None) / 600
    val_clean = 0.42 + 0.75 * np.exp(-progress / 160) + 0.25 * memorised**1.3
    val = eval_log(rng, c, val_clean, sigma=0.03)
    acc = accuracy(rng, c, 0.86 - 0.3 * np.exp(-progress / 160) - 0.02 * memorised, examples=500)
    recs = records(c, train, lr, grad_norm(rng, train, 8.0), {"val/loss": val, "val/accuracy": acc})
    onset = smoothed_argmin(curves_of(recs))
    task = "small-set fine-tune, eval per epoch"
    return _run("sparse_jagged_overfitting", task, c, recs, "overfitting", onset)


def near_zero_finetune_healthy(seed: int = 3) -> GeneratedRun:
    """A token-classification fine-tune whose train loss reaches ~0.001, with bumps to
    0.03-0.05 (a hard batch in the logging window: one point or a short streak)."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=1500, logging_steps=10, eval_steps=100, sec_per_step=0.2)
    lr = schedule(c, peak=3e-5, warmup=50, decay="linear")
    progress = area(lr)
    clean = 0.0009 + 1.2 * np.exp(-progress / 40) + 0.012 * np.exp(-progress / 250)
    train = train_log(rng, c, clean, batch_sigma=0.2 + 0.4 * np.exp(-clean / 0.01))
    starts = rng.choice(np.arange(len(train) // 3, len(train) - 3), size=7, replace=False)
    for start in starts:
        width = int(rng.integers(1, 4))
        train[start : start + width] = rng.uniform(0.03, 0.05, width)
    val = eval_log(rng, c, 0.045 + 0.06 * np.exp(-progress / 150), sigma=0.02)
    acc = accuracy(rng, c, 0.992 - 0.01 * np.exp(-progress / 150), examples=20000)
    grad = grad_norm(rng, train, 12.0)
    recs = records(c, train, lr, grad, {"val/loss": val, "val/accuracy": acc})
    return _run("near_zero_finetune_healthy", "NER fine-tune, loss to ~0.001", c, recs)


def warmup_spike_healthy(seed: int = 4) -> GeneratedRun:
    """A small LM from scratch: the loss jumps 2-3x for a few logs as warm-up ends (the lr
    at its peak), recovers within 50 steps, then descends as a healthy run does."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=5000, logging_steps=10, eval_steps=250, sec_per_step=0.3)
    warmup = 500
    lr = schedule(c, peak=6e-4, warmup=warmup, decay="cosine", floor=0.1)
    clean = 2.8 + 8.0 * (1 + area(lr) / 40) ** -0.55
    train = train_log(rng, c, clean, batch_sigma=0.1, drift_sigma=0.005)
    grad = grad_norm(rng, train, 4.0) + 0.3
    at = int(np.searchsorted(c.logged, warmup + 10))
    for i, (loss_x, grad_x) in enumerate([(2.1, 8.0), (3.2, 15.0), (1.9, 6.0), (1.15, 2.0)]):
        train[at + i] *= loss_x
        grad[at + i] *= grad_x
    val = eval_log(rng, c, 1.03 * clean, sigma=0.004)
    recs = records(c, train, lr, grad, {"val/loss": val})
    return _run("warmup_spike_healthy", "small LM from scratch, warm-up spike", c, recs)


def drift_rising_accuracy_healthy(seed: int = 5) -> GeneratedRun:
    """A sentiment fine-tune: the eval loss bottoms out early and drifts up ~7 % (the model
    grows confident) while the eval accuracy keeps rising; healthy by the written rule
    (overfitting needs a >=15 % rise)."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=4000, logging_steps=20, eval_steps=200, sec_per_step=0.2)
    lr = schedule(c, peak=2e-5, warmup=240, decay="linear")
    progress = area(lr)
    share = progress / progress[-1]
    train = train_log(rng, c, 0.03 + 0.66 * np.exp(-progress / 250), batch_sigma=0.35)
    val = eval_log(rng, c, 0.27 + 0.45 * np.exp(-progress / 150) + 0.035 * share, sigma=0.008)
    acc_clean = 0.935 - 0.1 * np.exp(-progress / 300) - 0.03 * (1 - share)
    acc = accuracy(rng, c, acc_clean, examples=872)
    recs = records(c, train, lr, grad_norm(rng, train, 5.0), {"val/loss": val, "val/accuracy": acc})
    return _run(
        "drift_rising_accuracy_healthy", "sentiment fine-tune, eval loss drifts up", c, recs
    )


def sparse_plateau(seed: int = 6) -> GeneratedRun:
    """A classifier with 20 evaluations whose lr is cut 1,000x at 40 % of the run (a step
    schedule's gamma mistyped): both losses stop improving there, at a high level."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=3000, logging_steps=50, eval_steps=150, sec_per_step=0.4)
    onset = 1200
    lr = schedule(c, peak=1e-4, warmup=100, decay="constant")
    lr[onset - 1 :] *= 1e-3
    progress = area(lr)
    train = train_log(rng, c, 0.93 + 0.9 * np.exp(-progress / 1000), batch_sigma=0.026)
    val = eval_log(rng, c, 0.97 + 0.9 * np.exp(-progress / 1000), sigma=0.001)
    acc = accuracy(rng, c, 0.62 - 0.25 * np.exp(-progress / 1000), examples=5000)
    recs = records(c, train, lr, grad_norm(rng, train, 3.0), {"val/loss": val, "val/accuracy": acc})
    return _run("sparse_plateau", "classifier, lr cut 1000x at 40 %", c, recs, "plateau", onset)


def finetune_divergence(seed: int = 7) -> GeneratedRun:
    """A causal-LM fine-tune at too high an lr: at step 720 the loss blows up from ~0.95 to
    ~7 within three logs and stays there, the gradient norm with it."""
    rng = np.random.default_rng(seed)
    c = Cadence(max_steps=2000, logging_steps=10, eval_steps=100, sec_per_step=0.5)
    onset = 720
    lr = schedule(c, peak=2e-4, warmup=60, decay="linear")
    step = np.arange(1, c.max_steps + 1)
    broken = 6.3 + 0.5 * np.exp(-(step - onset) / 600.0)
    healthy = 0.9 + 1.3 * np.exp(-area(lr) / 80)
    clean = np.where(step < onset, healthy, broken)
    train = train_log(rng, c, clean, batch_sigma=0.12)
    at = int(np.searchsorted(c.logged, onset))
    train[at : at + 2] = [3.5, 6.0]
    grad = grad_norm(rng, train, 1.5)
    grad[at : at + 3] *= [40.0, 25.0, 10.0]
    val = eval_log(rng, c, 1.05 * clean, sigma=0.01)
    recs = records(c, train, lr, grad, {"val/loss": val})
    task = "causal-LM fine-tune, lr too high"
    return _run("finetune_divergence", task, c, recs, "divergence", onset)


GENERATORS: tuple[Callable[[], GeneratedRun], ...] = (
    long_slow_healthy,
    decay_tail_healthy,
    sparse_jagged_overfitting,
    near_zero_finetune_healthy,
    warmup_spike_healthy,
    drift_rising_accuracy_healthy,
    sparse_plateau,
    finetune_divergence,
)
"""Every generated run's generator, each with its own default seed."""
