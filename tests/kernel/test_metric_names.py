"""Metric naming: one answer to a metric's direction, role and the run's key metric."""

from __future__ import annotations

import pytest

from kernel.metric_names import (
    infer_key_metric,
    is_loss,
    metric_mode,
    metric_pairs,
    name_tokens,
    named_mode,
    split_role,
)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        # the names on which the kernel's and the summary's copies disagreed
        ("val/recall_error", "min"),
        ("val/mse_score", "min"),
        ("val/iou", "max"),
        ("val/loss", "min"),
        ("eval_ppl", "min"),
        ("val/acc", "max"),
        ("f1", "max"),
        ("val/accuracy", "max"),
        ("eval/mAP@50", "max"),
        ("mAP50", "max"),
        ("eval/IoU", "max"),
        ("val/top1_acc", "max"),
        ("val/r2", "max"),
        ("bleu", "max"),
        ("train/loss", "min"),
        ("valLoss", "min"),
        ("trainloss", "min"),
        ("bitmap_loss", "min"),
        ("heatmap/error", "min"),
        ("val/score_loss", "min"),
        ("neg_mean_squared_error", "max"),
        ("val/wer", "min"),
    ],
)
def test_the_name_states_the_direction(name: str, mode: str) -> None:
    assert named_mode(name) == mode
    assert metric_mode(name) == mode


@pytest.mark.parametrize("name", ["lr", "grad/norm", "throughput", "fr", "r"])
def test_a_name_that_states_no_direction_is_minimised(name: str) -> None:
    assert named_mode(name) is None
    assert metric_mode(name) == "min"


def test_losses_by_name() -> None:
    assert all(map(is_loss, ["train/loss", "aux_loss", "trainloss", "val/LOSS"]))
    assert not any(map(is_loss, ["val/acc", "val/error", "lr"]))


def test_tokens_split_separators_and_camel_case() -> None:
    assert name_tokens("val/top1_acc") == ["val", "top1", "acc"]
    assert name_tokens("trainAcc@5") == ["train", "acc", "5"]


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("val/loss", ("val", "loss")),
        ("val_loss", ("val", "loss")),
        ("eval_loss", ("val", "loss")),
        ("validation/acc", ("val", "acc")),
        ("training_loss", ("train", "loss")),
        ("loss", ("", "loss")),
        ("valley", ("", "valley")),
    ],
)
def test_role_split(name: str, role: tuple[str, str]) -> None:
    assert split_role(name) == role


def test_train_and_validation_metrics_are_paired_by_name() -> None:
    names = ["train/loss", "val/loss", "val/acc", "loss", "eval_loss", "train_f1", "val_f1", "lr"]
    assert metric_pairs(names) == [
        ("loss", "eval_loss"),
        ("train/loss", "val/loss"),
        ("train_f1", "val_f1"),
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["train/loss", "val/loss", "val/acc"], "val/loss"),
        (["train/loss", "val_loss"], "val_loss"),
        (["train_loss", "eval_loss", "lr"], "eval_loss"),
        (["train/loss", "val/ppl"], "val/ppl"),
        (["train/aux_loss", "train/loss", "lr"], "train/loss"),
        (["loss", "lr"], "loss"),
        (["train/ce_loss", "lr"], "train/ce_loss"),
        (["val/acc", "lr"], "val/acc"),
        (["lr", "grad_norm"], None),
        ([], None),
    ],
)
def test_key_metric_inference(names: list[str], expected: str | None) -> None:
    assert infer_key_metric(names) == expected
