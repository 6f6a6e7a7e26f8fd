"""Knobs: discovery on real optimizers, bounds, toggles, custom knobs, exact undo, and live
learning-rate changes that LR schedulers keep instead of undoing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from kernel import FnKnob, Knob, KnobError, read_kernel_state, read_ledger
from kernel.errors import KernelError
from kernel.knobs import KnobSpec, optimizer_knobs

LR_SCHEDULE = torch.optim.lr_scheduler


def _params(n: int = 2) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3)) for _ in range(n)]


def _spec(run_dir: Path, name: str) -> KnobSpec:
    """The published spec of knob ``name``; the test fails when there is none."""
    state = read_kernel_state(run_dir)
    spec = state.knob(name) if state is not None else None
    assert spec is not None, f"kernel.json of {run_dir} publishes no knob {name!r}"
    return spec


def _sgd(**kw) -> torch.optim.SGD:
    return torch.optim.SGD(_params(1), **{"lr": 0.1, **kw})


def _two_groups() -> torch.optim.SGD:
    a, b = _params()
    groups: list[dict[str, Any]] = [{"params": [a]}, {"params": [b], "lr": 0.2}]
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def _last(run_dir):
    return read_ledger(run_dir)[-1]


# -- discovery -----------------------------------------------------------------------


def test_sgd_gets_lr_weight_decay_and_momentum(make_kernel):
    kernel = make_kernel(optimizer=_sgd(momentum=0.9, weight_decay=1e-4))
    assert set(kernel.knobs) == {"lr", "weight_decay", "momentum", "grad_clip"}
    assert kernel.knobs["momentum"].get() == 0.9
    assert kernel.knobs["weight_decay"].get() == 1e-4


def test_adam_gets_beta1_and_beta2_and_no_momentum(make_kernel, send):
    opt = torch.optim.Adam(_params(1), lr=1e-3, betas=(0.9, 0.98))
    kernel = make_kernel(optimizer=opt)
    assert set(kernel.knobs) == {"lr", "weight_decay", "beta1", "beta2", "grad_clip"}
    send(knob="beta1", value=0.8)
    send(knob="beta2", value=0.995)
    kernel.step(0)
    assert opt.param_groups[0]["betas"] == (0.8, 0.995)
    assert [r.after for r in read_ledger(kernel.run_dir)] == [0.8, 0.995]


def test_two_param_groups_get_per_group_knobs(make_kernel, send, run_dir):
    opt = _two_groups()
    kernel = make_kernel(optimizer=opt)
    assert {"lr", "lr[0]", "lr[1]", "momentum[1]"} <= set(kernel.knobs)
    assert kernel.knobs["lr"].get() == [0.1, 0.2]  # groups differ: one value per group
    assert _spec(run_dir, "lr").groups == 2
    send(knob="lr[1]", value=0.05)
    kernel.step(0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.05]
    assert _last(run_dir).before == 0.2


def test_aggregate_knob_is_one_number_when_groups_agree(make_kernel, send):
    opt = _two_groups()
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", value=0.3)
    kernel.step(0)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]
    assert kernel.knobs["lr"].get() == 0.3


def test_multiplier_on_the_aggregate_scales_every_group(make_kernel, send, run_dir):
    opt = _two_groups()
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", multiplier=0.5)
    kernel.step(0)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1]
    row = _last(run_dir)
    assert (row.before, row.after) == ([0.1, 0.2], [0.05, 0.1])


def test_a_list_value_sets_each_group(make_kernel, send):
    opt = _two_groups()
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", value=[0.01, 0.02])
    kernel.step(0)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]


def test_a_list_of_the_wrong_length_is_rejected(make_kernel, send, run_dir):
    opt = _two_groups()
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", value=[0.01, 0.02, 0.03])
    send(knob="lr[1]", value=[0.01])
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [r.decision for r in rows] == ["rejected", "rejected"]
    assert "expects 2 numbers or one, got a list of 3" in (rows[0].reason or "")
    assert "expects one number" in (rows[1].reason or "")
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]


def test_a_single_group_knob_refuses_a_list(make_kernel, send, run_dir):
    weights = {"aux": 0.5}
    kernel = make_kernel(optimizer=_sgd(), loss_weights=weights)
    send(knob="lr", value=[0.05])
    send(knob="loss.aux", value=[0.3])
    kernel.step(0)
    assert [r.decision for r in read_ledger(run_dir)] == ["rejected", "rejected"]
    assert kernel.knobs["lr"].get() == 0.1 and weights == {"aux": 0.5}


# -- bounds and types ----------------------------------------------------------------


def test_out_of_bounds_value_is_rejected_naming_bounds_and_value(make_kernel, send, run_dir):
    opt = _sgd()
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", value=50.0)
    kernel.step(0)
    row = _last(run_dir)
    assert row.decision == "rejected"
    assert "[1e-07, 10.0]" in row.reason and "50" in row.reason
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_multiplier_past_the_bounds_is_rejected(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(knob="lr", multiplier=1000.0)
    kernel.step(0)
    assert _last(run_dir).decision == "rejected"
    assert "got 100" in _last(run_dir).reason


def test_user_bounds_override_the_defaults(make_kernel, send, run_dir):
    bounds = {"lr": (0.01, 0.5), "grad_clip": (0.0, 5.0), "loss.aux": (0.0, 2.0)}
    opt = _sgd()
    kernel = make_kernel(optimizer=opt, bounds=bounds, loss_weights={"aux": 1.0})
    for knob, value in (("lr", 0.6), ("grad_clip", 6.0), ("loss.aux", 3.0), ("lr", 0.4)):
        send(knob=knob, value=value)
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [r.decision for r in rows] == ["rejected"] * 3 + ["applied"]
    assert "[0.01, 0.5]" in (rows[0].reason or "")
    lr = _spec(run_dir, "lr")
    assert (lr.lo, lr.hi, lr.value) == (0.01, 0.5, 0.4)


def test_per_group_bounds_fall_back_to_the_aggregate_name(make_kernel):
    kernel = make_kernel(optimizer=_two_groups(), bounds={"lr": (0.01, 0.5), "lr[1]": (0.1, 1.0)})
    assert (kernel.knobs["lr[0]"].lo, kernel.knobs["lr[0]"].hi) == (0.01, 0.5)
    assert (kernel.knobs["lr[1]"].lo, kernel.knobs["lr[1]"].hi) == (0.1, 1.0)


def test_a_toggle_knob_takes_only_true_or_false(make_kernel, send, run_dir):
    weights = {"aux": True}
    kernel = make_kernel(loss_weights=weights)
    assert kernel.knobs["loss.aux"].kind == "bool"
    send(knob="loss.aux", value=0.0)
    send(knob="loss.aux", multiplier=2.0)
    send(knob="loss.aux", value=False)
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [r.decision for r in rows] == ["rejected", "rejected", "applied"]
    assert "true or false" in (rows[0].reason or "")
    assert "multiplier cannot apply to an on/off knob" in (rows[1].reason or "")
    assert weights == {"aux": False}


def test_a_float_knob_refuses_a_bool(make_kernel, send, run_dir):
    kernel = make_kernel(loss_weights={"aux": 0.5})
    send(knob="loss.aux", value=True)
    kernel.step(0)
    assert "expects a number" in _last(run_dir).reason


def test_grad_clip_multiplier_while_off_is_rejected_with_advice(make_kernel, send, run_dir):
    kernel = make_kernel(grad_clip=None)
    send(knob="grad_clip", multiplier=2.0)
    kernel.step(0)
    row = _last(run_dir)
    assert row.decision == "rejected"
    assert "clipping is off" in row.reason and "grad_clip=1.0" in row.reason
    assert kernel.knobs["grad_clip"].get() == 0.0


def test_grad_clip_multiplier_scales_when_on(make_kernel, send):
    kernel = make_kernel(grad_clip=2.0)
    send(knob="grad_clip", multiplier=0.25)
    kernel.step(0)
    assert kernel.knobs["grad_clip"].get() == 0.5


def test_a_knob_refuses_bounds_in_the_wrong_order():
    with pytest.raises(ValueError, match="lower bound 2.0 is above upper bound 1.0"):
        FnKnob("k", get=lambda: 0.0, set=lambda v: None, lo=2.0, hi=1.0)


def test_validate_rejects_non_finite_numbers():
    knob = FnKnob("k", get=lambda: 0.0, set=lambda v: None)
    with pytest.raises(KnobError, match="finite"):
        knob.validate(math.inf)


# -- custom knobs --------------------------------------------------------------------


def test_fn_knob_is_a_live_knob(make_kernel, send, run_dir):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    dropout = FnKnob(
        "dropout",
        get=lambda: model[1].p,
        set=lambda v: setattr(model[1], "p", v),
        lo=0.0,
        hi=0.9,
        description="dropout rate",
    )
    kernel = make_kernel(knobs=[dropout])
    send(knob="dropout", value=0.3)
    send(knob="dropout", value=0.95)
    kernel.step(0)
    assert model[1].p == 0.3
    assert [r.decision for r in read_ledger(run_dir)] == ["applied", "rejected"]
    spec = _spec(run_dir, "dropout")
    assert (spec.lo, spec.hi, spec.value, spec.description) == (0.0, 0.9, 0.3, "dropout rate")


def test_two_knobs_cannot_share_a_name(make_kernel):
    kernel = make_kernel(loss_weights={"aux": 1.0})
    with pytest.raises(KernelError, match="already exists"):
        kernel.register(FnKnob("loss.aux", get=lambda: 0.0, set=lambda v: None))


# -- snapshot / restore --------------------------------------------------------------


def _lr_state(opt, sched) -> list:
    groups = [
        {k: g[k] for k in ("lr", "initial_lr", "max_lr", "min_lr") if k in g}
        for g in opt.param_groups
    ]
    return [groups, list(sched.base_lrs), list(sched._last_lr)]


@pytest.mark.parametrize("hyper", ["lr", "weight_decay", "momentum"])
def test_snapshot_and_restore_are_exact(hyper):
    opt = _sgd(momentum=0.9, weight_decay=0.01)
    sched = LR_SCHEDULE.OneCycleLR(opt, max_lr=0.3, total_steps=20, cycle_momentum=False)
    knob = next(k for k in optimizer_knobs(opt, [sched]) if k.name == hyper)
    before, snap = _lr_state(opt, sched), knob.snapshot()
    value = opt.param_groups[0][hyper]
    knob.set(value * 0.37 + 1e-3)
    assert opt.param_groups[0][hyper] != value
    knob.restore(snap)
    assert opt.param_groups[0][hyper] == value
    assert _lr_state(opt, sched) == before


def _tensor_lr_adam() -> tuple[torch.optim.Adam, torch.Tensor]:
    lr = torch.tensor(0.1)
    return torch.optim.Adam(_params(1), lr=lr, foreach=False), lr


def test_a_tensor_lr_is_changed_in_place(make_kernel, send):
    opt, lr = _tensor_lr_adam()
    kernel = make_kernel(optimizer=opt, scheduler=LR_SCHEDULE.StepLR(opt, step_size=5))
    send(knob="lr", value=0.05)
    kernel.step(0)
    assert opt.param_groups[0]["lr"] is lr
    assert lr.item() == pytest.approx(0.05)


def test_snapshot_and_restore_are_exact_for_a_tensor_lr():
    opt, lr = _tensor_lr_adam()
    sched = LR_SCHEDULE.StepLR(opt, step_size=5)
    knob = next(k for k in optimizer_knobs(opt, [sched]) if k.name == "lr")
    snap = knob.snapshot()
    knob.set(0.05)
    knob.restore(snap)
    assert lr.item() == pytest.approx(0.1)
    assert float(sched.base_lrs[0]) == pytest.approx(0.1)


def test_beta_snapshot_and_restore_are_exact():
    opt = torch.optim.AdamW(_params(1), betas=(0.9, 0.999))
    knob = next(k for k in optimizer_knobs(opt) if k.name == "beta2")
    snap = knob.snapshot()
    knob.set(0.95)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    knob.restore(snap)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_a_custom_knob_subclass_snapshots_all_its_state():
    class Pair(Knob):
        def __init__(self) -> None:
            super().__init__("pair", lo=0.0, hi=10.0)
            self.a, self.b = 1.0, 2.0

        def get(self):
            return self.a

        def _write(self, value):
            self.a, self.b = value, value * 2

        def snapshot(self):
            return (self.a, self.b)

        def restore(self, snapshot):
            self.a, self.b = snapshot

    knob = Pair()
    snap = knob.snapshot()
    knob.set(knob.resolve(multiplier=3.0))
    assert (knob.a, knob.b) == (3.0, 6.0)
    knob.restore(snap)
    assert (knob.a, knob.b) == (1.0, 2.0)


# -- LR schedulers keep a live change ------------------------------------------------


def _warmup_then_cosine(opt):
    warmup = LR_SCHEDULE.LinearLR(opt, start_factor=0.1, total_iters=5)
    cosine = LR_SCHEDULE.CosineAnnealingLR(opt, T_max=40)
    return LR_SCHEDULE.SequentialLR(opt, [warmup, cosine], milestones=[5])


def _chained(opt):
    warmup = LR_SCHEDULE.LinearLR(opt, start_factor=0.1, total_iters=5)
    return LR_SCHEDULE.ChainedScheduler([warmup, LR_SCHEDULE.ExponentialLR(opt, gamma=0.95)])


SCHEDULERS = {
    "StepLR": lambda opt: LR_SCHEDULE.StepLR(opt, step_size=7, gamma=0.5),
    "SequentialLR": _warmup_then_cosine,
    "ChainedScheduler": _chained,
    "LambdaLR": lambda opt: LR_SCHEDULE.LambdaLR(opt, lambda e: 1.0 / (1.0 + 0.1 * e)),
    "CosineAnnealingLR": lambda opt: LR_SCHEDULE.CosineAnnealingLR(opt, T_max=25),
    "OneCycleLR": lambda opt: LR_SCHEDULE.OneCycleLR(opt, max_lr=0.5, total_steps=60),
}


def _lr_trajectory(run_dir, make_kernel, send, name, *, change_at=None, factor=1.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = SCHEDULERS[name](opt)
    kernel = make_kernel(run_dir=run_dir, optimizer=opt, scheduler=sched)
    lrs = []
    for step in range(55):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        if step == change_at:
            send(run_dir=run_dir, knob="lr", value=opt.param_groups[0]["lr"] * factor)
        kernel.step(step)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_live_lr_change_rescales_the_schedule(tmp_path, make_kernel, send, name):
    plain = _lr_trajectory(tmp_path / "plain", make_kernel, send, name)
    changed = _lr_trajectory(
        tmp_path / "changed", make_kernel, send, name, change_at=12, factor=3.0
    )
    assert read_ledger(tmp_path / "changed")[0].decision == "applied"
    assert changed[:12] == plain[:12]
    for step in range(12, 55):
        assert changed[step] == pytest.approx(plain[step] * 3.0, rel=1e-9, abs=1e-15), step


def test_a_live_lr_change_reaches_get_last_lr(make_kernel, send):
    opt = _sgd()
    sched = LR_SCHEDULE.StepLR(opt, step_size=100)
    kernel = make_kernel(optimizer=opt, scheduler=sched)
    send(knob="lr", value=0.02)
    kernel.step(0)
    assert sched.get_last_lr() == [0.02]
