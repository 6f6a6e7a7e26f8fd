"""Importers: CSV tables and real TensorBoard event files become recorded runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evals.errors import RunFormatError
from evals.importers import import_csv, import_tensorboard
from evals.runs import load_run


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
