"""``autopilot memory`` through the real entry point, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopilot.cli import main
from memory.records import InterventionRecord, RunRecord, TaskFingerprint, Verdict
from memory.store import open_store

DIGITS = TaskFingerprint(task="digits", model="MLP", optimizer="Adam", n_params=4810)
CHARLM = TaskFingerprint(model="CharMLP", optimizer="Adam", n_params=90_000)


def _cut(run_id: str, step: int, verdict: Verdict, effect: float) -> InterventionRecord:
    return InterventionRecord(
        run_id=run_id, step=step, source="rules", kind="plateau", knob="lr", before=0.1,
        after=0.05, effect_rel=effect, verdict=verdict, command_id=f"rules-{run_id}-{step}",
        phase=0.5,
    )  # fmt: skip


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    """Three runs of two tasks; the digits runs each halved lr on a plateau."""
    path = tmp_path / "memory.sqlite"
    store = open_store(path)
    for i, (run_id, fp) in enumerate((("d1", DIGITS), ("c1", CHARLM), ("d2", DIGITS))):
        store.put_run(
            RunRecord(
                run_id=run_id, run_dir=f"runs/{run_id}", started_at=1_800_000_000.0 + 60 * i,
                ended_at=1_800_000_600.0 + 60 * i, fingerprint=fp, key_metric="val/loss",
                key_mode="min", best=0.25 + i, final=0.3 + i, start_knobs={"lr": 0.1},
            )
        )  # fmt: skip
    store.add_intervention(_cut("d1", 300, "better", 0.08))
    store.add_intervention(_cut("d2", 280, "better", 0.12))
    store.add_intervention(
        InterventionRecord(run_id="d2", step=400, op="reflex", source="kernel", kind="spike")
    )
    store.close()
    return path


def _memory(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> tuple[int, str]:
    code = main(["memory", *args, "--memory", f"sqlite:///{store}"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_list_shows_each_run_with_its_task_metric_and_changes(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _memory(capsys, store_file, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["run", "task", "started"]
    assert [line.split()[0] for line in lines[1:]] == ["d1", "c1", "d2"]
    d2 = lines[3].split()
    assert d2[1] == "digits" and "2027-01-15" in lines[3] and d2[-3:] == ["2.25", "2.3", "2"]
    assert CHARLM.key() in lines[2]  # no task name: its key
    code, out = _memory(capsys, store_file, "list", "--task", "digits")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["d1", "d2"]


def test_show_prints_a_run_and_its_interventions(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _memory(capsys, store_file, "show", "d2")
    assert code == 0
    assert "run d2  (runs/d2)" in out and "model MLP, optimizer Adam, parameters 4810" in out
    assert "interventions (2):" in out
    assert "lr 0.1 -> 0.05" in out and "+12.0%" in out and "better" in out
    assert "reflex" in out and "not measured" in out


def test_lessons_per_task_and_for_one(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _memory(capsys, store_file, "lessons")
    assert code == 0
    assert "task digits (key " in out and "plateau: lr x0.5 better 2 of 2" in out
    assert f"task {CHARLM.key()}: no measured interventions yet" in out
    code, out = _memory(capsys, store_file, "lessons", "--task", CHARLM.key())
    assert code == 0 and "digits" not in out
    code, out = _memory(capsys, store_file, "lessons", "--task", "nope")
    assert code == 0 and "no runs in the memory store" in out and "of task 'nope'" in out


def test_forget_deletes_and_says_what(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _memory(capsys, store_file, "forget", "d2")
    assert code == 0 and "forgot run d2 (digits, runs/d2) and 2 intervention(s)" in out
    store = open_store(store_file)
    assert [r.run_id for r in store.runs()] == ["d1", "c1"]
    assert {i.run_id for i in store.interventions()} == {"d1"}
    store.close()
    code, out = _memory(capsys, store_file, "forget", "d")  # exact ids only
    assert code == 2 and "error: no run 'd' in the memory store" in out and "d1, c1" not in out
    assert "did you mean d1?" in out


def test_an_unknown_run_is_a_clear_error(
    store_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _memory(capsys, store_file, "show", "zzz")
    assert code == 2 and "no run 'zzz'" in out and "autopilot memory list" in out
    code, out = _memory(capsys, tmp_path / "absent.sqlite", "forget", "d1")
    assert code == 2 and "does not exist yet" in out
    assert not (tmp_path / "absent.sqlite").exists()


def test_export_writes_every_run_and_intervention(
    store_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "memory.json"
    code, out = _memory(capsys, store_file, "export", str(target))
    assert code == 0 and "exported 3 run(s) and 3 intervention(s)" in out
    document = json.loads(target.read_text())
    runs = [RunRecord.model_validate(r) for r in document["runs"]]
    changes = [InterventionRecord.model_validate(i) for i in document["interventions"]]
    store = open_store(store_file)
    assert runs == store.runs() and changes == store.interventions()
    store.close()


def test_the_store_comes_from_the_config_or_the_environment(
    store_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    config = tmp_path / "user.toml"
    config.write_text(f'[memory]\nurl = "sqlite:///{store_file}"\n')
    assert main(["memory", "list", "--config", str(config)]) == 0
    assert "d1" in capsys.readouterr().out
    monkeypatch.setenv("AUTOPILOT_MEMORY_URL", str(store_file))
    assert main(["memory", "list"]) == 0
    assert "c1" in capsys.readouterr().out
    monkeypatch.setenv("AUTOPILOT_MEMORY_URL", "postgresql://me:hunter2@127.0.0.1:9/m")
    assert main(["memory", "list"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "start the server" in err and "hunter2" not in err
