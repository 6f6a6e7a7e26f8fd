"""The Lightning and Hugging Face adapters drive the kernel from inside a real training loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kernel import Command, append_command, read_kernel_state, read_ledger


def _applied(run_dir: Path, command_id: str) -> list:
    return [
        r for r in read_ledger(run_dir) if r.command_id == command_id and r.decision == "applied"
    ]


def _metric_steps(run_dir: Path, name: str) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r["step"] for r in records if name in r["metrics"]]


def _published_max_steps(run_dir: Path) -> int | None:
    state = read_kernel_state(run_dir)
    assert state is not None, f"no kernel.json in {run_dir}"
    return state.max_steps


def _command(cid: str, step: int, **fields) -> Command:
    return Command(id=cid, source="human", apply_at_step=step, **fields)


# -- package ----------------------------------------------------------------------


def test_importing_adapters_pulls_in_no_framework():
    code = (
        "import sys, kernel.adapters; "
        "assert not {'lightning', 'transformers'} & set(sys.modules), 'framework imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_framework_names_the_extra_to_install(monkeypatch):
    import kernel.adapters

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "kernel.adapters.lightning", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'train-autopilot\[lightning\]'"):
        kernel.adapters.AutopilotCallback  # noqa: B018


# -- Lightning ----------------------------------------------------------------------


def _fit_lightning(run_dir: Path, *, max_steps: int = 30, validate: bool = False, **trainer_kw):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from kernel.adapters import AutopilotCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_mse", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=gen), torch.randn(64, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        default_root_dir=run_dir / "pl",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2 if validate else 0,
        callbacks=[AutopilotCallback(run_dir)],
        **trainer_kw,
    )
    model = Tiny()
    trainer.fit(model, loader, loader)
    return trainer, model


def test_lightning_applies_a_live_lr_command(tmp_path):
    append_command(tmp_path, _command("c1", 5, knob="lr", value=0.05))
    trainer, _ = _fit_lightning(tmp_path)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    (row,) = _applied(tmp_path, "c1")
    assert row.step >= 5
    assert len(_metric_steps(tmp_path, "train/loss")) >= 25
    assert _metric_steps(tmp_path, "train/mse")


def test_lightning_stop_command_ends_fit_early(tmp_path):
    append_command(tmp_path, Command(id="s1", source="human", op="stop", apply_at_step=4))
    trainer, _ = _fit_lightning(tmp_path)
    assert trainer.global_step < 30
    assert _applied(tmp_path, "s1")


def test_lightning_logs_validation_after_sanity_check(tmp_path):
    _fit_lightning(tmp_path, max_steps=16, validate=True)
    steps = _metric_steps(tmp_path, "val/loss")
    assert steps and min(steps) >= 8  # one epoch is 8 steps; the sanity check is not logged


def test_lightning_checkpoint_command_saves_into_run_dir(tmp_path):
    append_command(tmp_path, Command(id="k1", source="human", op="checkpoint", apply_at_step=3))
    _fit_lightning(tmp_path, max_steps=6)
    assert _applied(tmp_path, "k1")
    assert list((tmp_path / "checkpoints").glob("step*.ckpt"))


def test_lightning_grad_clip_knob_takes_over_and_gives_back(tmp_path):
    append_command(tmp_path, _command("g1", 2, knob="grad_clip", value=0.25))
    trainer, _ = _fit_lightning(tmp_path, max_steps=6, gradient_clip_val=0.5)
    (row,) = _applied(tmp_path, "g1")
    assert (row.before, row.after) == (pytest.approx(0.5), pytest.approx(0.25))
    assert trainer.gradient_clip_val == 0.5


def test_lightning_publishes_the_trainers_max_steps(tmp_path):
    _fit_lightning(tmp_path, max_steps=6)
    assert _published_max_steps(tmp_path) == 6


def test_lightning_estimates_max_steps_from_epochs(tmp_path):
    _fit_lightning(tmp_path, max_steps=-1, max_epochs=2)  # 8 batches an epoch
    assert _published_max_steps(tmp_path) == 16


def test_lightning_estimate_counts_optimizer_steps_under_accumulation(tmp_path):
    _fit_lightning(tmp_path, max_steps=-1, max_epochs=2, accumulate_grad_batches=4)
    assert _published_max_steps(tmp_path) == 4


def test_lightning_metric_names_map_to_kernel_names():
    pytest.importorskip("lightning")
    from kernel.adapters.lightning import kernel_metric_name

    assert kernel_metric_name("val_loss") == "val/loss"
    assert kernel_metric_name("train_loss") == "train/loss"
    assert kernel_metric_name("val/acc") == "val/acc"
    assert kernel_metric_name("epoch") == "epoch"
    assert kernel_metric_name("my_metric", {"my_metric": "val/f1"}) == "val/f1"


# -- Hugging Face -------------------------------------------------------------------

HF_LR, HF_STEPS = 1e-3, 20


class _Tokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(i)
        return {
            "input_ids": torch.randint(0, 50, (8,), generator=gen),
            "labels": torch.tensor(i % 2),
        }


def _train_hf(run_dir: Path, *, callbacks=(), max_steps: int = HF_STEPS, **callback_kw):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate")
    from kernel.adapters import AutopilotTrainerCallback

    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(run_dir / "out"), max_steps=max_steps, learning_rate=HF_LR,
        per_device_train_batch_size=4, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    autopilot = AutopilotTrainerCallback(run_dir, **callback_kw)
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=_Tokens(),
        callbacks=[autopilot, *callbacks],
    )
    trainer.train()
    return trainer


def _lr_recorder():
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """The lr each optimizer step uses, by the global step before it."""

        def __init__(self) -> None:
            self.lrs: dict[int, float] = {}

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            self.lrs[state.global_step] = optimizer.param_groups[0]["lr"]

    return Recorder()


def test_hf_live_lr_command_rescales_the_schedule(tmp_path):
    pytest.importorskip("transformers")
    append_command(tmp_path, _command("c1", 5, knob="lr", value=2e-4))
    recorder = _lr_recorder()
    _train_hf(tmp_path, callbacks=[recorder])
    (row,) = _applied(tmp_path, "c1")
    assert row.step >= 5

    def scheduled(g: int) -> float:  # the unmodified linear decay, no warmup
        return HF_LR * (HF_STEPS - g) / HF_STEPS

    ratio = 2e-4 / scheduled(row.step)
    assert ratio == pytest.approx(0.2667, rel=1e-2)
    for g in range(row.step, HF_STEPS):
        assert recorder.lrs[g] == pytest.approx(scheduled(g) * ratio, rel=1e-6), g
    assert recorder.lrs[row.step - 1] == pytest.approx(scheduled(row.step - 1))


def test_hf_logs_train_loss_and_lr(tmp_path):
    _train_hf(tmp_path, max_steps=4)
    assert _metric_steps(tmp_path, "train/loss") == [1, 2, 3, 4]
    assert _metric_steps(tmp_path, "lr")
    assert not _metric_steps(tmp_path, "train/runtime")  # the end-of-run summary is skipped


def test_hf_publishes_the_trainers_max_steps(tmp_path):
    _train_hf(tmp_path, max_steps=3)
    assert _published_max_steps(tmp_path) == 3


def test_hf_stop_command_ends_training_early(tmp_path):
    append_command(tmp_path, Command(id="s1", source="human", op="stop", apply_at_step=3))
    trainer = _train_hf(tmp_path)
    assert trainer.state.global_step < HF_STEPS
    assert _applied(tmp_path, "s1")


def test_hf_checkpoint_command_asks_the_trainer_to_save(tmp_path):
    append_command(tmp_path, Command(id="k1", source="human", op="checkpoint", apply_at_step=2))
    _train_hf(tmp_path, max_steps=3)
    assert _applied(tmp_path, "k1")
    assert (tmp_path / "out" / "checkpoint-2").is_dir()


def test_hf_grad_clip_knob_takes_over_max_grad_norm(tmp_path):
    append_command(tmp_path, _command("g1", 2, knob="grad_clip", value=0.25))
    trainer = _train_hf(tmp_path, max_steps=4)
    (row,) = _applied(tmp_path, "g1")
    assert (row.before, row.after) == (pytest.approx(1.0), pytest.approx(0.25))
    assert trainer.args.max_grad_norm == 1.0  # given back after training


def test_hf_log_keys_map_to_kernel_names():
    pytest.importorskip("transformers")
    from kernel.adapters.huggingface import kernel_metrics

    logs: dict[str, Any] = {"loss": 0.5, "eval_loss": 0.7, "learning_rate": 1e-3, "grad_norm": 2.0}
    logs |= {"eval_acc": 0.9, "epoch": 1.0, "note": "text"}
    assert kernel_metrics(logs) == {
        "train/loss": 0.5, "val/loss": 0.7, "lr": 1e-3, "grad/norm": 2.0,
        "val/acc": 0.9, "train/epoch": 1.0,
    }  # fmt: skip
    assert kernel_metrics({"train_runtime": 1.0, "train_loss": 0.4}) == {}
