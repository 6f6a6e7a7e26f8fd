"""A hand-written schedule that overwrites a live change is recorded as ``overridden``;
``Kernel.schedule`` composes such a schedule with live changes; torch schedulers attached
to the kernel keep carrying changes along."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from kernel import KernelError, read_ledger


def _get_lr(it: int) -> float:
    """nanoGPT's shape: a linear warmup, then cosine decay to a floor."""
    warmup, decay, top, floor = 5, 50, 6e-4, 6e-5
    if it < warmup:
        return top * (it + 1) / warmup
    ratio = min((it - warmup) / (decay - warmup), 1.0)
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (top - floor)


def _adamw() -> torch.optim.AdamW:
    return torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=6e-4)


def test_a_hand_written_schedule_overriding_a_live_change_is_recorded(
    make_kernel, send, run_dir, caplog
):
    opt = _adamw()
    kernel = make_kernel(optimizer=opt)
    caplog.set_level(logging.WARNING, logger="kernel")
    for it in range(12):
        for group in opt.param_groups:
            group["lr"] = _get_lr(it)  # the loop owns its optimizer
        if it in (3, 8):
            send(id=f"half{it}", knob="lr", multiplier=0.5)
        kernel.step(it)
    rows = [(r.command_id, r.decision, r.step) for r in read_ledger(run_dir)]
    assert rows == [
        ("half3", "applied", 3),
        ("half3", "overridden", 4),
        ("half8", "applied", 8),
        ("half8", "overridden", 9),
    ]
    row = read_ledger(run_dir)[1]
    assert (row.knob, row.before, row.after) == ("lr", _get_lr(3) * 0.5, _get_lr(4))
    assert "kernel.schedule('lr', value)" in (row.reason or "")
    warnings = [r for r in caplog.records if "training code set lr" in r.getMessage()]
    assert len(warnings) == 1  # once per knob


def test_kernel_schedule_keeps_a_live_change(make_kernel, send, run_dir):
    opt = _adamw()
    kernel = make_kernel(optimizer=opt)
    seen = []
    for it in range(12):
        kernel.schedule("lr", _get_lr(it))
        if it == 3:
            send(id="half", knob="lr", multiplier=0.5)
        kernel.step(it)
        seen.append(opt.param_groups[0]["lr"])
    assert [r.decision for r in read_ledger(run_dir)] == ["applied"]
    assert seen[:3] == [_get_lr(i) for i in range(3)]
    assert seen[3:] == pytest.approx([_get_lr(i) * 0.5 for i in range(3, 12)])


def test_an_absolute_change_sets_the_factor_against_the_schedule(make_kernel, send):
    opt = _adamw()
    kernel = make_kernel(optimizer=opt)
    kernel.schedule("lr", 1e-3)
    send(knob="lr", value=2e-3)
    kernel.step(0)
    assert kernel.schedule("lr", 5e-4) == pytest.approx(1e-3)


def test_schedule_clamps_to_the_knob_bounds_and_refuses_unknown_knobs(make_kernel, send):
    kernel = make_kernel(optimizer=_adamw(), bounds={"lr": (1e-5, 1e-3)})
    assert kernel.schedule("lr", 5e-3) == 1e-3
    with pytest.raises(KernelError, match="unknown knob 'lrr'; this run's knobs are: "):
        kernel.schedule("lrr", 1e-3)


def test_schedule_keeps_a_per_group_change(make_kernel, send):
    opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.ones(1))]} for _ in range(2)], lr=0.1
    )
    kernel = make_kernel(optimizer=opt)
    kernel.schedule("lr", 0.1)
    send(knob="lr[1]", multiplier=0.5)
    kernel.step(0)
    kernel.schedule("lr", 0.2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.1])


def test_an_attached_torch_scheduler_is_not_an_override(make_kernel, send, run_dir):
    opt = _adamw()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (it + 1))
    kernel = make_kernel(optimizer=opt, scheduler=sched)
    for it in range(6):
        if it == 2:
            send(knob="lr", multiplier=0.5)
        kernel.step(it)
        opt.step()
        sched.step()
    assert [r.decision for r in read_ledger(run_dir)] == ["applied"]
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-4 / 7 * 0.5)


def test_a_scheduler_the_kernel_does_not_know_overrides_the_change(make_kernel, send, run_dir):
    opt = _adamw()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (it + 1))
    kernel = make_kernel(optimizer=opt)  # scheduler not passed: it recomputes lr from base
    send(id="half", knob="lr", multiplier=0.25)
    kernel.step(0)
    opt.step()
    sched.step()
    kernel.step(1)
    assert [(r.command_id, r.decision) for r in read_ledger(run_dir)] == [
        ("half", "applied"),
        ("half", "overridden"),
    ]


def test_code_that_leaves_the_knob_alone_records_nothing(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_adamw(), loss_weights={"aux": 0.5})
    send(knob="loss.aux", value=0.1)
    for it in range(5):
        kernel.step(it)
    assert [r.decision for r in read_ledger(run_dir)] == ["applied"]
