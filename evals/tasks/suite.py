"""The benchmark's tasks: six setups, each with a good configuration and bad ones to rescue.

=============  ==========================================  ===============================
setup          what trains                                 bad starts (and loop bugs)
=============  ==========================================  ===============================
digits         64-unit MLP, 8x8 digits                     lr_high, lr_low; lr_spike,
                                                           lr_collapse (bugs)
digits_small   2x256 MLP on 100 digits                     no_reg (overfits)
digits_aux     digits + input-reconstruction head          loss_weights (loss.aux 1000x),
                                                           loss_weight_100 (100x)
charlm         char-level MLP language model               lr_high, lr_low
breast_cancer  64-unit MLP, breast cancer                  lr_high (val/loss spikes), lr_low
diabetes       128-unit MLP regression on 60 rows          no_reg (overfits)
=============  ==========================================  ===============================

A task with a ``LoopBug`` starts from the good configuration, and its own training loop
writes a knob mid-run (``group["lr"] *= 300`` at step 400: a spike that kills the ReLU
network; ``*= 1e-3`` at step 30: a collapsed lr), once, as a buggy hand-written loop would.

Every configuration was chosen by measurement; ``benchmarks/bench_tasks_check.py`` prints
the evidence. On each seed a bad start ends worse than its setup's good configuration;
setting the bad knobs to the good values by a live command at step 100 (for a bug: right
after its first bad update, with a rewind to before it when it raised the knob) wins back
most of the gap; the good configuration is at or near the best point of its setup's grid.

The optimizer is Adam with coupled L2 weight decay (``torch.optim.Adam(weight_decay=...)``):
decoupled decay (AdamW) shrinks weights by only ``lr * wd`` a step, which at these run
lengths barely regularises, so a "no regularisation" start would be no worse than the good
one. A search space is log-uniform, so "no weight decay" starts at the floor of its range.
"""

from __future__ import annotations

from evals.tasks.spec import LoopBug, Setup, TaskConfig

_LR = (1e-5, 1.0)
_WD = (1e-5, 0.1)

DIGITS = Setup(
    name="digits",
    dataset="digits",
    steps=600,
    eval_every=20,
    hidden=64,
    space={"lr": _LR, "weight_decay": _WD},
    grid={"lr": [1e-3, 3e-3, 1e-2, 3e-2], "weight_decay": [1e-4, 1e-3, 1e-2]},
)
DIGITS_SMALL = Setup(
    name="digits_small",
    dataset="digits",
    steps=600,
    eval_every=20,
    hidden=256,
    depth=2,
    n_train=100,
    space={"lr": _LR, "weight_decay": _WD},
    grid={"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [1e-5, 1e-3, 3e-3, 1e-2]},
)
DIGITS_AUX = Setup(
    name="digits_aux",
    dataset="digits",
    steps=600,
    eval_every=20,
    hidden=64,
    aux_head=True,
    space={"lr": _LR, "weight_decay": _WD, "loss.aux": (1e-3, 1e4)},
    grid={"lr": [3e-3, 1e-2], "weight_decay": [1e-4], "loss.aux": [0.01, 0.1, 1.0, 10.0, 100.0]},
)
CHARLM = Setup(
    name="charlm",
    dataset="sklearn_descr",
    steps=600,
    eval_every=40,
    hidden=128,
    context=16,
    embed=16,
    space={"lr": _LR, "weight_decay": _WD},
    grid={"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [1e-4, 1e-3, 1e-2]},
)
BREAST_CANCER = Setup(
    name="breast_cancer",
    dataset="breast_cancer",
    steps=600,
    eval_every=20,
    hidden=64,
    space={"lr": _LR, "weight_decay": _WD},
    grid={"lr": [3e-4, 1e-3, 3e-3, 1e-2], "weight_decay": [1e-4, 1e-3, 1e-2]},
)
DIABETES = Setup(
    name="diabetes",
    dataset="diabetes",
    steps=600,
    eval_every=20,
    hidden=128,
    n_train=60,
    space={"lr": _LR, "weight_decay": (1e-5, 1.0)},
    grid={"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [1e-5, 1e-2, 0.1, 0.3]},
)

SETUPS: dict[str, Setup] = {
    s.name: s for s in (DIGITS, DIGITS_SMALL, DIGITS_AUX, CHARLM, BREAST_CANCER, DIABETES)
}


def _task(
    setup: Setup,
    config: str,
    description: str,
    start: dict[str, float],
    *,
    healthy: bool = False,
    bug: LoopBug | None = None,
) -> TaskConfig:
    return TaskConfig(
        name=f"{setup.name}/{config}",
        setup=setup,
        description=description,
        start=start,
        healthy=healthy,
        bug=bug,
    )


_TASKS = [
    _task(DIGITS, "good", "MLP on 8x8 digits, Adam 0.01",
          {"lr": 0.01, "weight_decay": 1e-4}, healthy=True),
    _task(DIGITS, "lr_high", "learning rate 10x too high (Adam 0.1; good: 0.01)",
          {"lr": 0.1, "weight_decay": 1e-4}),
    _task(DIGITS, "lr_low", "learning rate 100x too low (Adam 1e-4; good: 0.01)",
          {"lr": 1e-4, "weight_decay": 1e-4}),
    _task(DIGITS, "lr_spike", "mid-run lr spike: the loop multiplies Adam's lr by 300 at "
          "step 400, once (0.01 -> 3): one update kills the ReLU network",
          {"lr": 0.01, "weight_decay": 1e-4}, bug=LoopBug(step=400, knob="lr", factor=300.0)),
    _task(DIGITS, "lr_collapse", "collapsed lr: the loop multiplies Adam's lr by 1e-3 at "
          "step 30, once (0.01 -> 1e-5)",
          {"lr": 0.01, "weight_decay": 1e-4}, bug=LoopBug(step=30, knob="lr", factor=1e-3)),
    _task(DIGITS_SMALL, "good", "2x256 MLP on 100 digits, L2 weight decay 3e-3",
          {"lr": 3e-3, "weight_decay": 3e-3}, healthy=True),
    _task(DIGITS_SMALL, "no_reg", "no regularisation: a 2x256 MLP on 100 digits overfits "
          "(weight decay 1e-5; good: 3e-3)", {"lr": 3e-3, "weight_decay": 1e-5}),
    _task(DIGITS_AUX, "good", "digits classifier with an input-reconstruction head, weight 1",
          {"lr": 3e-3, "weight_decay": 1e-4, "loss.aux": 1.0}, healthy=True),
    _task(DIGITS_AUX, "loss_weights", "reconstruction loss weighted 1000x too high "
          "(loss.aux 1000; good: 1); val/loss is the classification loss alone",
          {"lr": 3e-3, "weight_decay": 1e-4, "loss.aux": 1000.0}),
    _task(DIGITS_AUX, "loss_weight_100", "reconstruction loss weighted 100x too high "
          "(loss.aux 100; good: 1); val/loss is the classification loss alone",
          {"lr": 3e-3, "weight_decay": 1e-4, "loss.aux": 100.0}),
    _task(CHARLM, "good", "character-level MLP language model, Adam 3e-3",
          {"lr": 3e-3, "weight_decay": 1e-3}, healthy=True),
    _task(CHARLM, "lr_high", "learning rate 10x too high (Adam 0.03; good: 3e-3)",
          {"lr": 0.03, "weight_decay": 1e-3}),
    _task(CHARLM, "lr_low", "learning rate 30x too low (Adam 1e-4; good: 3e-3)",
          {"lr": 1e-4, "weight_decay": 1e-3}),
    _task(BREAST_CANCER, "good", "MLP on breast cancer, Adam 1e-3",
          {"lr": 1e-3, "weight_decay": 1e-2}, healthy=True),
    _task(BREAST_CANCER, "lr_high", "learning rate 500x too high: val/loss spikes "
          "(Adam 0.5; good: 1e-3)", {"lr": 0.5, "weight_decay": 1e-2}),
    _task(BREAST_CANCER, "lr_low", "learning rate 100x too low (Adam 1e-5; good: 1e-3)",
          {"lr": 1e-5, "weight_decay": 1e-2}),
    _task(DIABETES, "good", "MLP regression on 60 diabetes rows, L2 weight decay 0.1",
          {"lr": 3e-3, "weight_decay": 0.1}, healthy=True),
    _task(DIABETES, "no_reg", "no regularisation: an MLP on 60 diabetes rows overfits "
          "(weight decay 1e-5; good: 0.1)", {"lr": 3e-3, "weight_decay": 1e-5}),
]  # fmt: skip

TASKS: dict[str, TaskConfig] = {t.name: t for t in _TASKS}
