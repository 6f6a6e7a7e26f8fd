"""A command carries the bounds it was judged under; the kernel refuses a result outside
them, whatever the knob's own (wider) bounds allow."""

from __future__ import annotations

import torch

from kernel import read_ledger


def _sgd(lr: float) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=lr)


def test_a_multiplier_judged_on_a_stale_value_cannot_leave_its_bounds(make_kernel, send, run_dir):
    # the guard saw lr=0.05 and allowed x2 up to the config's 0.1; a warmup moved lr to 0.08
    opt = _sgd(0.05)
    kernel = make_kernel(optimizer=opt)
    opt.param_groups[0]["lr"] = 0.08
    send(id="x2", knob="lr", multiplier=2.0, bounds=(1e-4, 0.1))
    kernel.step(1)
    assert opt.param_groups[0]["lr"] == 0.08
    [row] = read_ledger(run_dir)
    assert (row.command_id, row.decision, row.before) == ("x2", "rejected", 0.08)
    assert row.reason == (
        "lr must be within [0.0001, 0.1] (the bounds this command was judged under), got 0.16"
    )


def test_a_result_within_the_command_bounds_is_applied(make_kernel, send, run_dir):
    opt = _sgd(0.04)
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", multiplier=2.0, bounds=(1e-4, 0.1))
    kernel.step(1)
    assert opt.param_groups[0]["lr"] == 0.08
    assert [r.decision for r in read_ledger(run_dir)] == ["applied"]


def test_command_bounds_hold_for_every_param_group(make_kernel, send, run_dir):
    opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.ones(1))], "lr": lr} for lr in (0.01, 0.06)]
    )
    kernel = make_kernel(optimizer=opt)
    send(knob="lr", multiplier=2.0, bounds=(1e-4, 0.1))
    kernel.step(1)
    [row] = read_ledger(run_dir)
    assert row.decision == "rejected" and "got [0.02, 0.12]" in (row.reason or "")
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.06]


def test_command_bounds_apply_to_an_absolute_value_too(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd(0.05))
    send(knob="lr", value=0.5, bounds=(1e-4, 0.1))
    kernel.step(1)
    [row] = read_ledger(run_dir)
    assert row.decision == "rejected" and "got 0.5" in (row.reason or "")
