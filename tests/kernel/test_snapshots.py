"""Snapshots: exact restore of every tensor, the ring, best snapshots, only finite states."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from _snapshot_run import Run

from kernel import Kernel, KernelSettings, read_kernel_state
from kernel.snapshots import Snapshot, SnapshotRing, TrainingState


@pytest.fixture
def run(tmp_path: Path):
    r = Run(tmp_path / "run", snapshot_every_steps=5, snapshot_keep=3, snapshot_on_best=False)
    yield r
    r.close()


def _equal(a: Any, b: Any) -> bool:
    """Deep equality, tensors compared with ``torch.equal`` (dtype too)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _live(run: Run) -> dict[str, object]:
    return {
        "params": [p.detach().clone() for p in run.model.parameters()],
        "buffers": [b.detach().clone() for b in run.model.buffers()],
        "opt": copy.deepcopy(run.opt.state_dict()),
        "sched": copy.deepcopy(run.sched.state_dict()),
        "knobs": {n: k.get() for n, k in run.kernel.knobs.items()},
        "rng": torch.get_rng_state(),
    }


def test_restore_is_exact(run: Run) -> None:
    run.train(6)
    at_snapshot = _live(run)
    snapshot = run.kernel.snapshots[-1]
    assert snapshot.step == 5
    run.train(7)
    run.weights["aux"] = 2.0
    run.kernel.knobs["grad_clip"].set(3.0)
    assert not _equal(_live(run)["params"], at_snapshot["params"])
    run.kernel.restore(snapshot)
    assert _equal(_live(run), at_snapshot)
    assert run.weights["aux"] == 0.5
    run.train(3)  # training after a restore leaves the snapshot as it was
    run.kernel.restore(snapshot)
    assert _equal(_live(run), at_snapshot)


def test_a_snapshot_is_a_copy_on_the_cpu_with_its_dtype() -> None:
    model = torch.nn.Linear(3, 2).to(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = TrainingState(optimizer=opt, knobs={})
    snap = state.capture(0)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert snap.parameters[0].dtype == torch.float64 and snap.parameters[0].device.type == "cpu"
    assert not torch.equal(snap.parameters[0], model.weight)


def test_parameters_come_from_the_optimizer_without_a_model() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainingState(optimizer=opt, knobs={})
    assert [t.shape for t in state.capture(0).parameters] == [(2, 3), (2,)]


def test_the_ring_keeps_snapshot_keep(run: Run) -> None:
    run.train(31)
    assert [s.step for s in run.kernel.snapshots] == [20, 25, 30]


def test_the_rng_states_are_restored(run: Run) -> None:
    run.train(1)
    snapshot = run.kernel.snapshots[-1]
    expected = (torch.rand(3), random.random())
    run.kernel.restore(snapshot)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_a_non_finite_loss_takes_no_snapshot(run: Run) -> None:
    run.train(5)
    run.train(1, {"train/loss": float("nan")})  # step 5 is due
    assert [s.step for s in run.kernel.snapshots] == [0]
    run.train(1)
    assert [s.step for s in run.kernel.snapshots] == [0, 6]  # due, and finite again


def test_any_non_finite_loss_term_takes_no_snapshot(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=1)
    r.train(1, {"train/loss": 1.0, "train/loss/aux": float("inf")})
    assert r.kernel.snapshots == []
    r.close()


def test_a_new_best_takes_a_snapshot_kept_beyond_the_ring(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=10, snapshot_keep=1, snapshot_best_every_steps=1)
    losses = [5.0, 4.0, 1.0, 3.0, 2.0] + [6.0] * 20
    for loss in losses:
        r.train(1, {"train/loss": loss})
    snaps = r.kernel.snapshots
    assert [(s.step, s.kind) for s in snaps] == [(2, "best"), (20, "cadence")]
    listing = r.kernel._rewinder.listing()
    assert [i.best for i in listing] == [True, False]
    r.close()


def test_best_snapshots_are_spaced(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=100, snapshot_best_every_steps=5)
    for i in range(12):
        r.train(1, {"train/loss": 10.0 - i})
    # bests at 0 (with the cadence), 5 and 10; the best slot keeps the latest; 11 is too soon
    assert [(s.step, s.kind) for s in r.kernel.snapshots] == [(0, "cadence"), (10, "best")]
    r.close()


def test_snapshots_off(tmp_path: Path) -> None:
    r = Run(tmp_path / "run", snapshot_every_steps=0)
    r.train(5)
    assert r.kernel.snapshots == []
    r.close()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("snapshot_every_steps", -1, "snapshot_every_steps must be >= 0"),
        ("snapshot_keep", 0, "snapshot_keep must be >= 1"),
        ("snapshot_best_every_steps", -2, "snapshot_best_every_steps must be >= 0"),
    ],
)
def test_settings_are_checked(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KernelSettings(**{field: value})  # type: ignore[arg-type]


def test_a_loop_that_gave_only_the_optimizer_is_covered(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with Kernel(tmp_path / "run", optimizer=opt, settings=KernelSettings(poll_interval_s=0)) as k:
        for step in range(3):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            k.step(step)
        saved = model.weight.detach().clone()
        snapshot: Snapshot = k.snapshots[0]
        k.restore(snapshot)
        assert not torch.equal(model.weight, saved)
        assert torch.equal(model.weight, snapshot.parameters[0])


def test_the_ring_picks_best_by_mode() -> None:
    ring = SnapshotRing(keep=3, mode="max")
    state = TrainingState(knobs={})
    for step, acc in ((0, 0.1), (1, 0.9), (2, 0.5)):
        ring.add(state.capture(step, metric=acc))
    best = ring.best()
    assert best is not None and best.step == 1
    assert ring.last(2) is not None and ring.last(2).step == 1  # type: ignore[union-attr]
    assert ring.at_or_before(0) is not None and ring.last(4) is None


def test_a_non_finite_measured_grad_norm_takes_no_snapshot(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = KernelSettings(poll_interval_s=0, snapshot_every_steps=1)
    with Kernel(tmp_path / "run", optimizer=opt, grad_clip=1.0, settings=settings) as k:
        model.weight.grad = torch.full_like(model.weight, float("nan"))
        k.clip_grad_norm_(model.parameters())
        k.log(0, {"train/loss": 1.0})
        k.step(0)
        assert k.snapshots == []


def test_snapshots_that_would_not_fit_the_memory_cap_are_off_and_say_why(tmp_path: Path) -> None:
    run = Run(tmp_path / "small", snapshot_every_steps=5, snapshot_memory_mb=0.001)
    run.train(12)
    assert run.kernel.snapshots == []
    state = read_kernel_state(run.kernel.run_dir)
    assert state is not None and "snapshot_memory_mb" in (state.snapshots_off or "")
    run.close()


def test_the_ring_shrinks_to_what_fits_the_memory_cap(tmp_path: Path) -> None:
    one = Run(tmp_path / "probe")
    one.train(1)  # Adam's moments exist from its first step
    size = one.kernel._rewinder.state.nbytes()
    one.close()
    run = Run(tmp_path / "capped", snapshot_every_steps=5, snapshot_keep=3,
              snapshot_on_best=False, snapshot_memory_mb=2.5 * size / 2**20)  # fmt: skip
    run.train(30)
    # 2 fit: one on the cadence and the best one (the ring kept 3 and the best)
    assert run.kernel._rewinder.ring.keep == 1 and len(run.kernel.snapshots) <= 2
    run.close()
