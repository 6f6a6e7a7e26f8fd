"""A ``rewind`` command inside a real Hugging Face ``Trainer`` and a real Lightning ``Trainer``:
the adapters hand the kernel the model, optimizer and scheduler the framework uses, so the
rewind restores every parameter, buffer (BatchNorm statistics), optimizer-state tensor, the
schedule and the lr exactly, and the framework's own step counter goes on.

The state is observed by a second callback that runs after the autopilot's at the same hook
(the safe point, right after ``kernel.step``): it copies the live state at every step and keeps
each snapshot the kernel lists, so the test compares the live state right after the rewind
with the snapshot it names, and the snapshot with the live state of the step it was taken at.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from kernel import Command, KernelSettings, append_command, read_ledger
from kernel.snapshots import Snapshot

STEPS = 20
APPEND_AT = 12  # the recorder appends the rewind after the kernel's step 12; read at 13
SETTINGS = KernelSettings(
    poll_interval_s=0.0,
    snapshot_every_steps=5,
    snapshot_on_best=False,  # snapshots on the cadence only: 1, 6, 11, 16
    update_ratio_every_steps=0,
)
RESTORED = ["parameters", "buffers", "optimizer", "scheduler", "knobs", "rng"]


def _net() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )


@dataclass(frozen=True, kw_only=True)
class LiveState:
    """CPU copies of what a rewind must restore, in the order a snapshot lists them."""

    parameters: list[torch.Tensor]
    buffers: list[torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    knobs: dict[str, Any]


def _capture(model: torch.nn.Module, optimizer: Any, scheduler: Any, kernel: Any) -> LiveState:
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    rest = [p for p in model.parameters() if all(p is not q for q in grouped)]
    params = grouped + rest
    assert len(params) == len(list(model.parameters()))  # every parameter is compared
    return LiveState(
        parameters=[p.detach().clone() for p in params],
        buffers=[b.detach().clone() for b in model.buffers()],
        optimizer=copy.deepcopy(optimizer.state_dict()),
        scheduler=copy.deepcopy(scheduler.state_dict()),
        knobs={name: knob.get() for name, knob in kernel.knobs.items()},
    )


def _same(state: LiveState, snap: Snapshot) -> bool:
    """Whether ``state`` equals ``snap`` exactly, tensor by tensor."""
    if len(state.parameters) != len(snap.parameters) or len(state.buffers) != len(snap.buffers):
        return False
    tensors = zip(state.parameters + state.buffers, snap.parameters + snap.buffers, strict=True)
    if not all(torch.equal(a, b) for a, b in tensors):
        return False
    saved = snap.optimizer
    assert saved is not None
    live = state.optimizer
    if (
        live["param_groups"] != saved["param_groups"]
        or live["state"].keys() != saved["state"].keys()
    ):
        return False
    for i, entry in saved["state"].items():
        if live["state"][i].keys() != entry.keys():
            return False
        if not all(torch.equal(torch.as_tensor(live["state"][i][k]), v) for k, v in entry.items()):
            return False
    return state.scheduler == snap.schedulers[0] and state.knobs == snap.knob_values


class _Observed:
    """The live state at each step and every snapshot the kernel listed, by step."""

    def __init__(self) -> None:
        self.states: dict[int, LiveState] = {}
        self.snapshots: dict[int, Snapshot] = {}

    def record(self, step: int, state: LiveState, kernel: Any) -> None:
        self.states[step] = state
        for snap in kernel.snapshots:
            assert self.snapshots.setdefault(snap.step, snap) is snap
        if step == APPEND_AT and self.command is not None:  # as from another process
            append_command(kernel.run_dir, self.command)

    command: Command | None = Command(id="rw", source="human", op="rewind", reason="spike")


def _check_rewind(run_dir: Path, seen: _Observed, *, at: int, to: int) -> None:
    (row,) = [r for r in read_ledger(run_dir) if r.command_id == "rw"]
    assert (row.decision, row.op, row.step, row.snapshot_step) == ("applied", "rewind", at, to)
    assert row.restored == RESTORED
    snap = seen.snapshots[to]
    assert _same(seen.states[to], snap)  # the snapshot is the state of its step
    assert not _same(seen.states[at - 1], snap)  # training had moved on from it
    assert _same(seen.states[at], snap)  # right after the rewind: every tensor as then
    assert not _same(seen.states[at + 1], snap)  # and training goes on from there
    assert sorted(seen.states) == list(range(1, STEPS + 1))  # the step counter goes on


# -- Hugging Face -------------------------------------------------------------------


class _Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, generator=gen), torch.randn(64, 1, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class _BatchNormRegressor(torch.nn.Module):
    """Not a ``PreTrainedModel``: the Trainer takes any module that returns its loss.

    Its loss is NaN at the forward pass ``nan_at`` (counted from 1), if given."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.net = _net()
        self.nan_at, self.calls = nan_at, 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        out = self.net(x)
        loss = torch.nn.functional.mse_loss(out, labels)
        if self.calls == self.nan_at:
            loss = loss * math.nan  # its gradients, and the weights after the update, too
        return {"loss": loss, "logits": out}


def _train_hf(
    run_dir: Path, model: torch.nn.Module, seen: _Observed, settings: KernelSettings = SETTINGS
) -> Any:
    """A real ``Trainer`` run of ``STEPS`` steps, logging every step, observed by ``seen``."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate")
    from transformers import TrainerCallback

    from kernel.adapters import AutopilotTrainerCallback

    autopilot = AutopilotTrainerCallback(run_dir, key_metric="train/loss", settings=settings)

    class Recorder(TrainerCallback):
        """Runs after the autopilot's ``on_log``, the safe point of a step that logs."""

        def on_log(self, args, state, control, model=None, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
            kernel = autopilot.kernel
            live = _capture(model, optimizer, kwargs["lr_scheduler"], kernel)
            seen.record(state.global_step, live, kernel)

    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(run_dir / "out"), max_steps=STEPS, learning_rate=1e-2,
        per_device_train_batch_size=8, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True, warmup_steps=3,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_Pairs(), callbacks=[autopilot, Recorder()]
    )
    trainer.train()
    return trainer


def test_hf_rewind_restores_the_trainers_state_exactly(tmp_path: Path) -> None:
    seen = _Observed()
    trainer = _train_hf(tmp_path, _BatchNormRegressor(), seen)
    assert trainer.state.global_step == STEPS
    _check_rewind(tmp_path, seen, at=APPEND_AT + 1, to=11)  # snapshots at 1, 6, 11


def test_hf_snapshots_judge_a_step_by_its_own_readings(tmp_path: Path) -> None:
    """The Trainer logs a step after ``on_step_end``; a snapshot taken there, before the
    step's readings reach the kernel, kept the NaN weights of a step whose loss was NaN (the
    Trainer logs a NaN loss as the mean of the earlier ones; the gradient norm the kernel
    measured before the update is NaN)."""
    seen = _Observed()
    seen.command = None
    no_reflex = dataclasses.replace(SETTINGS, reflex_action="off")
    _train_hf(tmp_path, _BatchNormRegressor(nan_at=6), seen, no_reflex)  # a snapshot is due at 6
    assert 1 in seen.snapshots and 6 not in seen.snapshots
    for step, snap in seen.snapshots.items():
        assert all(p.isfinite().all() for p in snap.parameters), step


def _check_reflex(run_dir: Path, seen: _Observed, *, at: int, metric: str) -> None:
    """The NaN of step 6 rewound at step ``at``, exactly, to the snapshot of step 1, the
    newest that training before step 6 vouches for; no snapshot ever held NaN weights."""
    (row,) = read_ledger(run_dir)
    assert (row.source, row.op, row.decision, row.step, row.snapshot_step) == (
        "kernel", "rewind", "applied", at, 1,
    )  # fmt: skip
    assert row.reflex is not None and (row.reflex.cause, row.reflex.metric) == ("nonfinite", metric)
    assert _same(seen.states[at], seen.snapshots[1])
    for step, snap in seen.snapshots.items():
        assert all(p.isfinite().all() for p in snap.parameters), step
    after = [s for step, s in seen.states.items() if step >= at]
    assert all(p.isfinite().all() for s in after for p in s.parameters)  # training recovered


def test_hf_a_nan_loss_trips_the_reflex_on_the_gradient_norm(tmp_path: Path) -> None:
    seen = _Observed()
    seen.command = None
    _train_hf(tmp_path, _BatchNormRegressor(nan_at=6), seen)
    # The Trainer hides a NaN loss (logging_nan_inf_filter); the kernel measures the gradient
    # norm at every step (it clips, taking over max_grad_norm): NaN at 6, 7, 8 trips at 8.
    _check_reflex(tmp_path, seen, at=8, metric="grad/norm")


# -- Lightning ----------------------------------------------------------------------


def _fit_lightning(run_dir: Path, seen: _Observed, *, nan_at: int | None = None) -> Any:
    """A real Lightning ``fit`` of ``STEPS`` steps (Adam, a step LR schedule), observed by
    ``seen`` after the autopilot's ``on_train_batch_end``; the loss of batch ``nan_at`` (from
    1) is NaN, if given."""
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from kernel.adapters import AutopilotCallback

    class Regressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            return loss * math.nan if self.global_step + 1 == nan_at else loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    autopilot = AutopilotCallback(run_dir, key_metric="train/loss", settings=SETTINGS)

    class Recorder(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            live = _capture(pl_module, trainer.optimizers[0], scheduler, autopilot.kernel)
            seen.record(trainer.global_step, live, autopilot.kernel)

    data = _Pairs()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x, data.y), batch_size=8, shuffle=True
    )
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        default_root_dir=run_dir / "pl",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[autopilot, Recorder()],
    )
    trainer.fit(Regressor(), loader)
    return trainer


def test_lightning_rewind_restores_the_trainers_state_exactly(tmp_path: Path) -> None:
    seen = _Observed()
    seen.command = Command(id="rw", source="human", op="rewind", to="step", to_step=9)
    trainer = _fit_lightning(tmp_path, seen)
    assert trainer.global_step == STEPS
    _check_rewind(tmp_path, seen, at=APPEND_AT + 1, to=6)  # the newest at or before step 9


def test_lightning_a_nan_loss_trips_the_reflex_at_its_own_step(tmp_path: Path) -> None:
    seen = _Observed()
    seen.command = None
    trainer = _fit_lightning(tmp_path, seen, nan_at=6)
    assert trainer.global_step == STEPS
    _check_reflex(tmp_path, seen, at=6, metric="train/loss")  # at the step whose loss it was
