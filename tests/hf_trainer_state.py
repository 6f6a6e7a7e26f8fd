"""A small Hugging Face ``trainer_state.json`` in the shape the Trainer writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_STEPS, EVAL_STEPS, LOGGING_STEPS = 200, 50, 10
NAN_STEP = 120


def trainer_state() -> dict[str, Any]:
    """Train entries every 10 steps (a ``nan`` loss at step 120), evals every 50, and the
    closing summary entry the Trainer appends."""
    history: list[dict[str, Any]] = []
    for step in range(LOGGING_STEPS, MAX_STEPS + 1, LOGGING_STEPS):
        loss = float("nan") if step == NAN_STEP else round(2.0 / (1 + step / 50), 4)
        history.append(
            {
                "epoch": step / 100,
                "grad_norm": 1.5,
                "learning_rate": 5e-5 * (1 - step / 200),
                "loss": loss,
                "step": step,
            }
        )
        if step % EVAL_STEPS == 0:
            history.append(
                {
                    "epoch": step / 100,
                    "eval_loss": 2.2 / (1 + step / 60),
                    "eval_accuracy": 0.5 + step / 1000,
                    "eval_runtime": 1.9,
                    "eval_samples_per_second": 263.1,
                    "eval_steps_per_second": 33.0,
                    "step": step,
                }
            )
    history.append(
        {
            "epoch": 2.0,
            "step": MAX_STEPS,
            "total_flos": 1.2e14,
            "train_loss": 0.81,
            "train_runtime": 95.2,
            "train_samples_per_second": 33.6,
            "train_steps_per_second": 2.1,
        }
    )
    return {
        "best_metric": None,
        "epoch": 2.0,
        "eval_steps": EVAL_STEPS,
        "global_step": MAX_STEPS,
        "is_world_process_zero": True,
        "log_history": history,
        "logging_steps": LOGGING_STEPS,
        "max_steps": MAX_STEPS,
        "num_train_epochs": 2,
        "total_flos": 1.2e14,
        "train_batch_size": 16,
    }


def write_trainer_state(directory: Path, state: dict[str, Any] | None = None) -> Path:
    """Write ``trainer_state.json`` into ``directory`` as the Trainer does (``NaN`` literal)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "trainer_state.json"
    path.write_text(json.dumps(state if state is not None else trainer_state(), indent=2))
    return path
