"""Reflexes: the kernel rewinds by itself, within one step, when a training loss spikes or
turns non-finite; a healthy run never trips; freeze and ``record`` only record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from spiked_loop import SPIKE_STEP, SpikedLoop

from kernel import Kernel, KernelSettings, MetricRecord, read_ledger, write_freeze
from kernel.ledger import LEDGER_FILE
from kernel.reflexes import Reflex, ReflexSettings


def _reflex_rows(run_dir: Path):
    return [r for r in read_ledger(run_dir) if r.source == "kernel"]


def test_a_spike_is_rewound_within_one_step_to_a_snapshot_from_before_it(tmp_path: Path) -> None:
    loop = SpikedLoop(tmp_path)
    snapshots: dict[int, list[torch.Tensor]] = {}
    original = loop.kernel._rewinder.ring.add

    def keep(snapshot: Any) -> None:  # the copies a rewind must restore, as taken
        snapshots[snapshot.step] = [p.clone() for p in snapshot.parameters]
        original(snapshot)

    loop.kernel._rewinder.ring.add = keep  # type: ignore[method-assign]
    loop.train(200)
    # the update of SPIKE_STEP used lr x300: the loss logged at the next step is the first
    # abnormal reading, and the reflex acts at that very step's safe point
    (row,) = _reflex_rows(tmp_path)
    assert row.decision == "applied" and row.op == "rewind" and row.intent == "rewind"
    assert row.step == SPIKE_STEP + 1
    assert row.reflex is not None and row.reflex.cause == "spike"
    assert row.reflex.metric == "train/loss" and row.reflex.step == SPIKE_STEP + 1
    assert row.snapshot_step is not None and row.snapshot_step < SPIKE_STEP  # not the bad update
    assert row.knob_changes == {"lr": (0.01 * 300, 0.01)}  # the bug's lr is undone
    restored = loop.after_step[SPIKE_STEP + 1]
    assert all(
        torch.equal(a, b) for a, b in zip(restored, snapshots[row.snapshot_step], strict=True)
    )
    assert loop.opt.param_groups[0]["lr"] == 0.01
    records = [
        MetricRecord.model_validate_json(line)
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    marked = [r for r in records if r.rewound_to is not None]
    assert [(r.step, r.rewound_to) for r in marked] == [(SPIKE_STEP + 2, row.snapshot_step)]
    assert all(s <= row.snapshot_step for s in (x.step for x in loop.kernel.snapshots) if s < 121)
    assert loop.full_loss() < 0.3  # the network lives on


def test_without_the_reflex_the_spike_kills_the_network(tmp_path: Path) -> None:
    off = SpikedLoop(tmp_path / "off", reflex_action="off")
    off.train(200)
    on = SpikedLoop(tmp_path / "on")
    on.train(200)
    assert not _reflex_rows(tmp_path / "off")
    assert off.full_loss() > 1.0 > 0.3 > on.full_loss()


def test_a_healthy_run_never_trips(tmp_path: Path) -> None:
    loop = SpikedLoop(tmp_path, spike=None)
    loop.train(300)
    assert not _reflex_rows(tmp_path)


def test_a_non_finite_loss_trips_at_once(tmp_path: Path) -> None:
    loop = SpikedLoop(tmp_path, spike=None)
    loop.train(80, nan_at=70)
    (row,) = _reflex_rows(tmp_path)
    assert row.step == 70 and row.reflex is not None and row.reflex.cause == "nonfinite"
    assert row.snapshot_step == 51  # snapshots at the first step, then every 50


def test_a_frozen_run_only_records_the_trip(tmp_path: Path) -> None:
    write_freeze(tmp_path, "prod")
    loop = SpikedLoop(tmp_path)
    loop.train(SPIKE_STEP + 1)
    (row,) = _reflex_rows(tmp_path)
    assert row.decision == "ignored_freeze" and "frozen" in (row.reason or "")
    assert loop.opt.param_groups[0]["lr"] == pytest.approx(3.0)


def test_record_mode_notes_the_trip_and_restores_nothing(tmp_path: Path) -> None:
    loop = SpikedLoop(tmp_path, reflex_action="record")
    loop.train(SPIKE_STEP + 1)
    (row,) = _reflex_rows(tmp_path)
    assert row.decision == "noted" and row.snapshot_step is None


def test_rewinds_stop_after_the_budget_and_say_so_once(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, settings=KernelSettings(reflex_max_rewinds=2))
    for step in range(1, 40):  # a loss that stays NaN whatever is restored
        kernel.log(step, {"train/loss": 1.0 if step < 25 else math.nan})
        kernel.step(step)
    kernel.close()
    rows = _reflex_rows(tmp_path)
    assert [(r.step, r.decision) for r in rows] == [(25, "applied"), (26, "applied"), (27, "noted")]


def test_a_loss_weight_change_rebases_the_levels() -> None:
    reflex = Reflex(ReflexSettings(warmup=3, window=8))
    for step in range(10):
        assert reflex.watch(step, {"train/loss": 1.0}) is None
    reflex.rebase()
    assert reflex.watch(10, {"train/loss": 50.0}) is None  # a loss x50 by design


def test_grad_norms_trip_only_when_non_finite_in_a_row() -> None:
    reflex = Reflex(ReflexSettings(warmup=3, window=8))
    for step in range(10):
        assert reflex.watch(step, {"grad/norm": 1.0, "train/loss": 1.0}) is None
    assert reflex.watch(10, {"grad/norm": math.inf, "train/loss": 1.0}) is None  # a scaler skip
    assert reflex.watch(11, {"grad/norm": math.inf, "train/loss": 1.0}) is None
    trip = reflex.watch(12, {"grad/norm": math.inf, "train/loss": 1.0})
    assert trip is not None and trip.cause == "nonfinite" and trip.metric == "grad/norm"


def test_validation_losses_are_not_watched() -> None:
    reflex = Reflex(ReflexSettings(warmup=3, window=8))
    for step in range(10):
        assert reflex.watch(step, {"val/loss": 1.0}) is None
    assert reflex.watch(10, {"val/loss": math.nan}) is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="reflex_action"):
        KernelSettings(reflex_action="panic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss_factor"):
        KernelSettings(reflex_loss_factor=1.0)


def test_the_ledger_row_round_trips(tmp_path: Path) -> None:
    loop = SpikedLoop(tmp_path)
    loop.train(SPIKE_STEP + 1)
    line = next(
        json.loads(x) for x in (tmp_path / LEDGER_FILE).read_text().splitlines() if '"kernel"' in x
    )
    assert line["reflex"]["cause"] == "spike" and line["reflex"]["vouched_step"] == SPIKE_STEP - 1


def test_a_tiny_grad_norm_of_a_memorised_set_does_not_trip_on_a_normal_batch() -> None:
    reflex = Reflex(ReflexSettings(warmup=3, window=8))
    for step, norm in enumerate((1.0, 0.9, 0.8, *[0.001] * 20)):
        assert reflex.watch(step, {"grad/norm": norm}) is None
    assert reflex.watch(30, {"grad/norm": 0.3}) is None  # 300x the median, below the start
    trip = reflex.watch(31, {"grad/norm": 50.0})
    assert trip is not None and trip.metric == "grad/norm" and trip.cause == "spike"
