"""Importers: CSV tables, real TensorBoard event files and Hugging Face ``trainer_state.json``
become recorded runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hf_trainer_state import (
    EVAL_STEPS,
    LOGGING_STEPS,
    MAX_STEPS,
    NAN_STEP,
    trainer_state,
    write_trainer_state,
)

from evals.errors import RunFormatError
from evals.importers import import_csv, import_tensorboard, import_trainer_state
from evals.runs import RunInfo, load_run


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    return path


def test_csv_skips_empty_cells_and_keeps_nonfinite(tmp_path: Path) -> None:
    path = _csv(tmp_path, "step,train/loss,val/loss\n1,0.9,\n2,0.8,nan\n3,inf,0.7\n")
    run = import_csv(path, tmp_path / "run")
    records = load_run(tmp_path / "run").records()
    assert run.path == tmp_path / "run"
    assert [r.step for r in records] == [1, 2, 3]
    assert records[0].metrics == {"train/loss": 0.9}
    assert math.isnan(records[1].metrics["val/loss"])
    assert records[2].metrics == {"train/loss": math.inf, "val/loss": 0.7}


def test_csv_merges_rows_by_step_and_reads_wall_time(tmp_path: Path) -> None:
    path = _csv(tmp_path, "it,wall_time,loss,acc\n20,5.0,0.5,\n10,1.0,0.6,\n20,6.0,,0.9\n")
    records = import_csv(path, tmp_path / "run", step_column="it").records()
    assert [(r.step, r.wall_time, r.metrics) for r in records] == [
        (10, 1.0, {"loss": 0.6}),
        (20, 6.0, {"loss": 0.5, "acc": 0.9}),
    ]


def test_csv_bad_cell_names_row_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "step,val/loss\n1,0.5\n2,oops\n")
    with pytest.raises(RunFormatError, match=r"row 3, column 'val/loss': 'oops' is not a number"):
        import_csv(path, tmp_path / "run")


def test_csv_without_step_column_lists_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "epoch,loss\n1,0.5\n")
    with pytest.raises(RunFormatError, match=r"no 'step' column \(columns: \['epoch', 'loss'\]\)"):
        import_csv(path, tmp_path / "run")


def test_tensorboard_merges_tags_by_step(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path / "tb") as writer:
        for step in (1, 2, 3):
            writer.add_scalar("train/loss", 1.0 / step, global_step=step)
        writer.add_scalar("val/loss", 0.75, global_step=2)
        writer.add_scalar("val/loss", float("nan"), global_step=3)
    records = import_tensorboard(tmp_path / "tb", tmp_path / "run").records()
    assert [r.step for r in records] == [1, 2, 3]
    assert records[1].metrics == {"train/loss": 0.5, "val/loss": 0.75}
    assert math.isnan(records[2].metrics["val/loss"])
    assert all(r.wall_time is not None for r in records)


def test_tensorboard_reads_a_single_event_file(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path / "tb") as writer:
        writer.add_scalar("loss", 0.5, global_step=4)
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    records = import_tensorboard(event_file, tmp_path / "run").records()
    assert [(r.step, r.metrics) for r in records] == [(4, {"loss": 0.5})]


def test_tensorboard_without_scalars_says_where_to_point(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFormatError, match="no scalar summaries"):
        import_tensorboard(tmp_path / "empty", tmp_path / "run")


def test_trainer_state_maps_names_and_merges_train_and_eval(tmp_path: Path) -> None:
    path = write_trainer_state(tmp_path / "hf")
    records = import_trainer_state(path, tmp_path / "run").records()
    assert [r.step for r in records] == list(range(10, MAX_STEPS + 1, 10))
    by_step = {r.step: r.metrics for r in records}
    assert by_step[10] == {"train/loss": 1.6667, "lr": 5e-5 * 0.95, "grad/norm": 1.5}
    assert by_step[50] == {
        "train/loss": round(2.0 / 2, 4), "lr": 5e-5 * 0.75, "grad/norm": 1.5,
        "val/loss": 2.2 / (1 + 50 / 60), "val/accuracy": 0.55,
    }  # fmt: skip
    assert all(r.wall_time is None for r in records)


def test_trainer_state_keeps_nonfinite_and_drops_bookkeeping(tmp_path: Path) -> None:
    run = import_trainer_state(write_trainer_state(tmp_path / "hf"), tmp_path / "run")
    assert math.isnan({r.step: r.metrics for r in run.records()}[NAN_STEP]["train/loss"])
    # the closing summary (train_loss, runtimes, flos) and epoch are not curves
    assert run.metric_names() == ["grad/norm", "lr", "train/loss", "val/accuracy", "val/loss"]
    assert run.records()[-1].metrics["train/loss"] == round(2.0 / 5, 4)


def test_trainer_state_from_its_directory_carries_labels_and_horizon(tmp_path: Path) -> None:
    write_trainer_state(tmp_path / "hf")
    (tmp_path / "hf" / "labels.json").write_text(
        json.dumps({"events": [], "source": "hub:org/model@abc", "notes": "healthy by the rule"})
    )
    run = import_trainer_state(tmp_path / "hf", tmp_path / "run")
    assert run.labels.healthy and run.labels.model_extra == {
        "source": "hub:org/model@abc", "notes": "healthy by the rule"
    }  # fmt: skip
    assert run.info == RunInfo(
        source="trainer_state.json", max_steps=MAX_STEPS, eval_steps=EVAL_STEPS,
        logging_steps=LOGGING_STEPS,
    )  # fmt: skip
    assert load_run(tmp_path / "run").info == run.info


def test_trainer_state_without_log_history_says_what_it_needs(tmp_path: Path) -> None:
    path = write_trainer_state(tmp_path / "hf", {"global_step": 3})
    with pytest.raises(RunFormatError, match="no 'log_history' list"):
        import_trainer_state(path, tmp_path / "run")
    with pytest.raises(RunFormatError, match="no trainer_state.json"):
        import_trainer_state(tmp_path, tmp_path / "run2")


def test_trainer_state_bad_entry_names_its_index_and_key(tmp_path: Path) -> None:
    state = trainer_state()
    state["log_history"][3]["loss"] = "oops"
    with pytest.raises(RunFormatError, match=r"log_history\[3\], 'loss': 'oops' is not a number"):
        import_trainer_state(write_trainer_state(tmp_path / "hf", state), tmp_path / "run")
    state = trainer_state()
    del state["log_history"][0]["step"]
    with pytest.raises(RunFormatError, match=r"log_history\[0\]: no integer 'step'"):
        import_trainer_state(write_trainer_state(tmp_path / "hf2", state), tmp_path / "run2")


def test_trainer_state_list_values_are_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    """A real log carried ``eval_thresholds: [0.91, 0.10]`` (one per class): the file was
    refused whole; the list is no point of a curve, so it is left out and named."""
    state = trainer_state()
    state["log_history"][1]["eval_thresholds"] = [0.91, 0.10]
    run = import_trainer_state(write_trainer_state(tmp_path / "hf", state), tmp_path / "run")
    assert "val/thresholds" not in run.metric_names() and "val/loss" in run.metric_names()
    assert "eval_thresholds" in caplog.text
