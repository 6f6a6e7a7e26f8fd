"""The Kernel inside a real training loop: commands at step boundaries, the ledger, metrics,
clipping, run operations, failures that never reach the training loop, and ``kernel.json``."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kernel import FnKnob, KernelState, MetricRecord, read_kernel_state, read_ledger
from kernel.jsonl import append_line
from kernel.knobs import KnobSpec


def _published(run_dir: Path) -> KernelState:
    """The run's kernel.json; the test fails when there is none."""
    state = read_kernel_state(run_dir)
    assert state is not None, f"no kernel.json in {run_dir}"
    return state


def _spec(state: KernelState, knob: str) -> KnobSpec:
    spec = state.knob(knob)
    assert spec is not None, f"kernel.json publishes no knob {knob!r}"
    return spec


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=lr)


def _decisions(run_dir) -> list[tuple[str | None, str]]:
    return [(r.command_id, r.decision) for r in read_ledger(run_dir)]


def _metrics(run_dir) -> list[MetricRecord]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [MetricRecord.model_validate_json(line) for line in lines]


# -- commands at step boundaries -----------------------------------------------------


def test_a_command_is_applied_at_the_next_step(make_kernel, send, run_dir):
    opt = _sgd()
    kernel = make_kernel(optimizer=opt)
    send(id="c1", knob="lr", value=0.05, reason="plateau", proposal_id="p1")
    assert opt.param_groups[0]["lr"] == 0.1  # nothing happens between steps
    kernel.step(7)
    assert opt.param_groups[0]["lr"] == 0.05
    [row] = read_ledger(run_dir)
    assert (row.step, row.command_id, row.source) == (7, "c1", "human")
    assert (row.op, row.knob) == ("set", "lr")
    assert (row.before, row.after, row.decision) == (0.1, 0.05, "applied")
    assert (row.reason, row.proposal_id, row.offset) == ("plateau", "p1", 0)


def test_the_ledger_keeps_whose_idea_an_approved_command_was(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(id="ai-rv-1-0", knob="lr", multiplier=0.5, proposed_by="ai", proposal_id="rv-1")
    append_line(run_dir / "commands.jsonl", json.dumps(
        {"id": "old", "source": "rules", "knob": "lr", "multiplier": 0.5}))  # fmt: skip
    kernel.step(1)
    rows = read_ledger(run_dir)
    assert [(r.command_id, r.source, r.proposed_by) for r in rows] == [
        ("ai-rv-1-0", "human", "ai"),  # a person ordered the AI's proposal
        ("old", "rules", None),  # a line from before commands had the field
    ]
    assert [r.decision for r in rows] == ["applied", "applied"]


def test_a_command_is_applied_once(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(knob="lr", multiplier=0.5)
    for step in range(5):
        kernel.step(step)
    assert kernel.knobs["lr"].get() == 0.05
    assert len(read_ledger(run_dir)) == 1


def test_a_future_command_waits_for_its_step(make_kernel, send, run_dir):
    opt = _sgd()
    kernel = make_kernel(optimizer=opt)
    send(id="later", knob="lr", value=0.02, apply_at_step=5)
    send(id="sooner", knob="lr", value=0.03, apply_at_step=3)
    for step in range(3):
        kernel.step(step)
    assert opt.param_groups[0]["lr"] == 0.1
    assert read_ledger(run_dir) == []
    assert [p.command.id for p in _published(run_dir).pending] == ["sooner", "later"]
    kernel.step(3)
    assert opt.param_groups[0]["lr"] == 0.03
    kernel.step(4)
    kernel.step(9)  # steps may jump: a due command is applied at the first step past it
    assert [(r.command_id, r.step) for r in read_ledger(run_dir)] == [("sooner", 3), ("later", 9)]
    assert _published(run_dir).pending == []


def test_a_past_due_command_is_applied_now(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(knob="lr", value=0.02, apply_at_step=2)
    kernel.step(10)
    assert [(r.step, r.decision) for r in read_ledger(run_dir)] == [(10, "applied")]


def test_commands_apply_in_file_order_within_a_step(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(knob="lr", value=0.2)
    send(knob="lr", multiplier=0.5)
    send(knob="lr", value=0.07)
    kernel.step(0)
    assert [(r.before, r.after) for r in read_ledger(run_dir)] == [
        (0.1, 0.2),
        (0.2, 0.1),
        (0.1, 0.07),
    ]


# -- rejections ----------------------------------------------------------------------


def test_a_malformed_line_is_rejected_with_its_reason_and_training_goes_on(make_kernel, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    for text in ("lr=0.1", "[]", '{"id": "x1", "source": "human", "knob": "lr", "value": "big"}'):
        append_line(run_dir / "commands.jsonl", text)
    kernel.step(0)
    rows = read_ledger(run_dir)
    assert [r.decision for r in rows] == ["rejected"] * 3
    assert "not valid JSON" in (rows[0].reason or "")
    assert "JSON object" in (rows[1].reason or "")
    assert (rows[2].command_id, rows[2].source) == ("x1", "human")  # traced back to its sender
    assert "value:" in (rows[2].reason or "")


def test_an_unknown_knob_is_rejected_listing_the_known_ones(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd(), loss_weights={"aux": 1.0})
    send(knob="learning_rate", value=0.1)
    kernel.step(0)
    reason = read_ledger(run_dir)[0].reason or ""
    assert "unknown knob 'learning_rate'" in reason
    assert "grad_clip, loss.aux, lr, momentum, weight_decay" in reason


def test_a_duplicate_command_id_is_rejected(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(id="same", knob="lr", value=0.05)
    kernel.step(0)
    send(id="same", knob="lr", value=0.01)
    kernel.step(1)
    assert _decisions(run_dir) == [("same", "applied"), ("same", "rejected")]
    assert "duplicate command id 'same'" in (read_ledger(run_dir)[1].reason or "")
    assert kernel.knobs["lr"].get() == 0.05


def test_a_duplicate_of_a_pending_command_is_rejected(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(id="same", knob="lr", value=0.05, apply_at_step=10)
    send(id="same", knob="lr", value=0.01)
    kernel.step(0)
    kernel.step(10)
    assert _decisions(run_dir) == [("same", "rejected"), ("same", "applied")]
    assert kernel.knobs["lr"].get() == 0.05


def test_a_rejected_id_may_be_sent_again_fixed(make_kernel, send, run_dir):
    kernel = make_kernel(optimizer=_sgd())
    send(id="again", knob="lr", value=99.0)
    send(id="again", knob="lr", value=0.01)
    kernel.step(0)
    assert _decisions(run_dir) == [("again", "rejected"), ("again", "applied")]


# -- metrics -------------------------------------------------------------------------


def test_metrics_keep_nan_and_infinity(make_kernel, run_dir):
    kernel = make_kernel()
    nan, inf = float("nan"), float("inf")
    kernel.log(0, {"loss": nan, "up": inf, "down": -inf, "acc": 0.5, "tensor": torch.tensor(2.5)})
    kernel.close()
    raw = json.loads((run_dir / "metrics.jsonl").read_text(), parse_constant=pytest.fail)
    assert raw["metrics"] == {
        "loss": "NaN",
        "up": "Infinity",
        "down": "-Infinity",
        "acc": 0.5,
        "tensor": 2.5,
    }
    assert raw["nonfinite"] == ["loss", "up", "down"]
    [record] = _metrics(run_dir)
    assert math.isnan(record.metrics["loss"])
    assert (record.metrics["up"], record.metrics["down"]) == (inf, -inf)
    assert record.step == 0 and record.nonfinite == ["loss", "up", "down"]


def test_log_accepts_tensors_and_skips_what_is_not_a_number(make_kernel, run_dir):
    kernel = make_kernel()
    for step in range(3):
        kernel.log(
            step, {"train/loss": torch.tensor(2.0**-step), "bad": "text", "vec": torch.ones(3)}
        )
        kernel.step(step)
    kernel.close()
    records = _metrics(run_dir)
    assert [r.step for r in records] == [0, 1, 2]
    assert [r.metrics for r in records] == [
        {"train/loss": 1.0},
        {"train/loss": 0.5},
        {"train/loss": 0.25},
    ]
    assert all((r.wall_time or 0) > 0 for r in records)


def test_a_metric_too_large_for_a_float_loses_only_itself(make_kernel, run_dir):
    kernel = make_kernel()
    kernel.log(0, {"loss": 1.0})
    kernel.log(1, {"tokens": 10**400, "loss": 0.5})
    kernel.close()
    assert [r.metrics for r in _metrics(run_dir)] == [{"loss": 1.0}, {"loss": 0.5}]
    assert _published(run_dir).status == "closed"


# -- gradient clipping ---------------------------------------------------------------


def _backward(model: torch.nn.Module, scale: float = 100.0) -> None:
    torch.manual_seed(0)
    (model(torch.randn(16, 4)).pow(2).mean() * scale).backward()


def _grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item()


def test_clip_grad_norm_clips_to_the_knob_and_records_the_norm(make_kernel, run_dir):
    model = torch.nn.Linear(4, 2)
    kernel = make_kernel(grad_clip=0.5)
    _backward(model)
    before = _grad_norm(model)
    assert before > 0.5
    returned = kernel.clip_grad_norm_(model.parameters())
    assert _grad_norm(model) <= 0.5 + 1e-6
    assert returned.item() == pytest.approx(before)
    kernel.log(0, {"train/loss": 1.0})
    kernel.close()
    assert _metrics(run_dir)[0].metrics["grad/norm"] == pytest.approx(before)


def test_a_grad_clip_command_turns_clipping_on(make_kernel, send):
    model = torch.nn.Linear(4, 2)
    kernel = make_kernel()
    send(knob="grad_clip", value=0.25)
    kernel.step(0)
    _backward(model)
    kernel.clip_grad_norm_(model.parameters())
    assert _grad_norm(model) <= 0.25 + 1e-6


def test_without_clipping_the_norm_is_recorded_at_most_once_per_interval(make_kernel, run_dir):
    from kernel import KernelSettings

    model = torch.nn.Linear(4, 2)
    kernel = make_kernel(settings=KernelSettings(poll_interval_s=0, grad_norm_interval_s=3600))
    _backward(model)
    norm = _grad_norm(model)
    for step in range(6):
        kernel.clip_grad_norm_(model.parameters())
        kernel.log(step, {"x": 1.0})
    kernel.close()
    assert _grad_norm(model) == norm  # untouched
    recorded = [r for r in _metrics(run_dir) if "grad/norm" in r.metrics]
    assert [r.step for r in recorded] == [0]  # the first call, then not within the hour
    assert recorded[0].metrics["grad/norm"] == pytest.approx(norm, rel=1e-5)


def test_a_negative_interval_turns_the_norm_off(make_kernel, run_dir):
    from kernel import KernelSettings

    model = torch.nn.Linear(4, 2)
    kernel = make_kernel(settings=KernelSettings(poll_interval_s=0, grad_norm_interval_s=-1))
    _backward(model)
    assert kernel.clip_grad_norm_(model.parameters()) is None
    kernel.log(0, {"x": 1.0})
    kernel.close()
    assert all("grad/norm" not in r.metrics for r in _metrics(run_dir))


# -- operations ----------------------------------------------------------------------


def test_stop_sets_should_stop(make_kernel, send, run_dir):
    kernel = make_kernel()
    kernel.step(0)
    assert not kernel.should_stop
    send(op="stop", reason="done")
    kernel.step(1)
    assert kernel.should_stop
    assert _published(run_dir).status == "stopping"
    assert read_ledger(run_dir)[0].op == "stop"


def test_pause_blocks_step_until_resume(make_kernel, send, run_dir, wait_for):
    kernel = make_kernel(optimizer=_sgd())
    steps_done: list[int] = []

    def train() -> None:
        for step in range(5):
            kernel.step(step)
            steps_done.append(step)

    send(op="pause")
    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    wait_for(lambda: _published(run_dir).status == "paused", what="status paused")
    assert steps_done == [] and kernel.paused
    send(knob="lr", value=0.05)  # commands are still handled while paused
    wait_for(lambda: len(read_ledger(run_dir)) == 2, what="the lr command while paused")
    assert steps_done == []
    send(op="resume")
    trainer.join(timeout=20)
    assert not trainer.is_alive()
    assert steps_done == [0, 1, 2, 3, 4]
    assert [r.op for r in read_ledger(run_dir)] == ["pause", "set", "resume"]
    assert _published(run_dir).status == "running"


def test_stop_ends_a_pause(make_kernel, send, run_dir, wait_for):
    kernel = make_kernel()
    send(op="pause")
    trainer = threading.Thread(target=kernel.step, args=(0,), daemon=True)
    trainer.start()
    wait_for(lambda: _published(run_dir).status == "paused", what="status paused")
    send(op="stop")
    trainer.join(timeout=20)
    assert not trainer.is_alive()
    assert kernel.should_stop and not kernel.paused


def test_resume_when_not_paused_is_rejected(make_kernel, send, run_dir):
    kernel = make_kernel()
    send(op="resume")
    kernel.step(0)
    row = read_ledger(run_dir)[0]
    assert (row.decision, row.reason) == ("rejected", "the run is not paused")


def test_checkpoint_calls_save_fn_with_the_step(make_kernel, send, run_dir):
    saved: list[int] = []
    kernel = make_kernel(save_fn=saved.append)
    send(op="checkpoint", apply_at_step=4)
    for step in range(6):
        kernel.step(step)
    assert saved == [4]
    assert _decisions(run_dir)[0][1] == "applied"


def test_a_failing_save_fn_is_recorded_and_training_goes_on(make_kernel, send, run_dir):
    def save(step: int) -> None:
        raise OSError(f"disk full at {step}")

    kernel = make_kernel(optimizer=_sgd(), save_fn=save)
    send(op="checkpoint")
    send(knob="lr", value=0.05)
    kernel.step(3)
    rows = read_ledger(run_dir)
    assert [r.decision for r in rows] == ["failed", "applied"]
    assert rows[0].error == "OSError: disk full at 3"


def test_checkpoint_without_save_fn_is_rejected(make_kernel, send, run_dir):
    kernel = make_kernel()
    send(op="checkpoint")
    kernel.step(0)
    row = read_ledger(run_dir)[0]
    assert row.decision == "rejected"
    assert "save_fn" in (row.reason or "")


def test_a_knob_that_fails_half_way_is_restored(make_kernel, send, run_dir):
    state: dict[str, Any] = {"v": 1.0, "log": []}

    def setter(value: float) -> None:
        state["v"] = value  # the first half of the change lands...
        state["log"].append(value)
        if value > 2.0:
            raise RuntimeError("device refused")  # ...then the second half fails

    knob = FnKnob("temperature", get=lambda: state["v"], set=setter, lo=0.0, hi=10.0)
    kernel = make_kernel(knobs=[knob])
    send(knob="temperature", value=5.0)
    kernel.step(0)
    row = read_ledger(run_dir)[0]
    assert (row.decision, row.before, row.after) == ("failed", 1.0, None)
    assert row.error == "RuntimeError: device refused"
    assert state["v"] == 1.0 and state["log"] == [5.0, 1.0]
    send(knob="temperature", value=1.5)
    kernel.step(1)
    assert state["v"] == 1.5  # the knob still works


def test_a_knob_whose_getter_raises_fails_alone(make_kernel, send, run_dir):
    def broken() -> float:
        raise RuntimeError("the module was replaced")

    weights = {"aux": 0.5}
    knob = FnKnob("temperature", get=broken, set=lambda v: None, lo=0.0, hi=5.0)
    kernel = make_kernel(knobs=[knob], loss_weights=weights)
    send(id="a", knob="temperature", value=1.0)
    send(id="b", knob="loss.aux", value=0.2)
    kernel.step(0)
    kernel.step(1)
    assert _decisions(run_dir) == [("a", "failed"), ("b", "applied")]
    assert weights == {"aux": 0.2}


# -- kernel.json and the context manager ---------------------------------------------


def test_kernel_json_describes_the_run(make_kernel, send, run_dir):
    kernel = make_kernel(
        optimizer=_sgd(), grad_clip=1.0, loss_weights={"aux": 0.3}, key_metric="val/loss"
    )
    send(knob="lr", value=0.04)
    kernel.step(11)
    state = _published(run_dir)
    assert (state.status, state.last_step) == ("running", 11)
    assert (state.key_metric, state.key_metric_mode) == ("val/loss", "min")
    assert state.cursor == (run_dir / "commands.jsonl").stat().st_size
    lr = _spec(state, "lr")
    assert (lr.kind, lr.lo, lr.hi, lr.scale, lr.value) == ("float", 1e-7, 10.0, "log", 0.04)
    assert (_spec(state, "grad_clip").value, _spec(state, "loss.aux").value) == (1.0, 0.3)
    assert state.freeze == "off"


def test_context_manager_marks_the_run_closed(run_dir):
    from kernel import Kernel

    with Kernel(run_dir) as kernel:
        kernel.step(0)
    assert _published(run_dir).status == "closed"
    kernel.close()  # a second close is harmless
    assert _published(run_dir).status == "closed"


def test_context_manager_marks_the_run_crashed(run_dir):
    from kernel import Kernel

    with pytest.raises(ZeroDivisionError), Kernel(run_dir) as kernel:
        kernel.step(0)
        _ = 1 / 0
    assert _published(run_dir).status == "crashed"


@pytest.mark.parametrize(
    ("metric", "mode"), [("val/recall_error", "min"), ("val/iou", "max"), (None, None)]
)
def test_the_published_mode_is_the_one_of_kernel_metric_names(make_kernel, run_dir, metric, mode):
    # tests/kernel/test_metric_names.py covers the names; here: the kernel publishes that answer
    make_kernel(key_metric=metric)
    assert _published(run_dir).key_metric_mode == mode


def test_an_explicit_mode_wins(make_kernel, run_dir):
    make_kernel(key_metric="val/loss", key_metric_mode="max")
    assert _published(run_dir).key_metric_mode == "max"


# -- heartbeat -----------------------------------------------------------------------


def test_the_heartbeat_goes_on_during_a_long_step(tmp_path, wait_for):
    from kernel import Kernel, KernelSettings

    kernel = Kernel(tmp_path, settings=KernelSettings(heartbeat_interval_s=0.05))
    before = time.time()
    kernel.step(7)
    after = time.time()
    first = _published(tmp_path)
    # the training thread is now "inside a long step": it makes no call at all
    wait_for(lambda: _published(tmp_path).heartbeat > first.heartbeat + 0.15)
    state = _published(tmp_path)
    assert state.status == "running" and state.last_step == 7
    assert state.last_step_time is not None
    assert before - 0.01 <= state.last_step_time <= after + 0.01
    kernel.close()
    closed = _published(tmp_path)
    assert closed.status == "closed"


# -- the run's horizon ---------------------------------------------------------------


def test_kernel_json_publishes_the_run_horizon(make_kernel, run_dir):
    make_kernel(max_steps=5000)
    assert _published(run_dir).max_steps == 5000


def test_a_run_without_a_horizon_publishes_none(make_kernel, run_dir):
    make_kernel()
    assert _published(run_dir).max_steps is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_max_steps_must_be_a_positive_integer(make_kernel, bad):
    with pytest.raises(ValueError, match=rf"max_steps must be an integer >= 1 .*got {bad!r}"):
        make_kernel(max_steps=bad)
