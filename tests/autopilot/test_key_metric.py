"""The key metric: one choice for the live autopilot and the replay, and a declared key
metric that is never logged is a warning with a documented fallback, never a silent no-op."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from autopilot.cli import main
from autopilot.config import Settings
from autopilot.context import key_metric_note, key_metric_of
from autopilot.watch import Autopilot
from evals.replay import replay_run
from evals.runs import load_run, write_run
from kernel import Kernel, MetricRecord, read_kernel_state


def records(steps: int, *, val: str | None = None, every: int = 50) -> list[MetricRecord]:
    """``train/loss`` every step that stops improving at step 300, ``val`` every ``every``."""
    out = []
    for s in range(steps):
        metrics = {"train/loss": 2.0 - 0.003 * min(s, 300) + 0.01 * (s % 3)}
        if val and s % every == 0:
            metrics[val] = 2.1 - 0.003 * min(s, 300)
        out.append(MetricRecord(step=s, metrics=metrics))
    return out


def tick_live(run_dir: Path, settings: Settings) -> dict:
    with Autopilot(run_dir, mode="suggest", settings=settings) as pilot:
        return pilot.tick()


def test_the_live_autopilot_and_the_replay_pick_the_same_key_metric(tmp_path: Path) -> None:
    recorded = write_run(tmp_path / "recorded", records(600, val="val_loss"))
    live = write_run(tmp_path / "live", records(600, val="val_loss"))
    # no plateau: a tick that diagnoses one needs a kernel.json to guard against
    settings = Settings.model_validate({"detectors": {"plateau_patience_steps": 10_000}})
    replayed, _, _ = replay_run(recorded, policy="rules", settings=settings)
    state = tick_live(live.path, settings)
    assert state["key_metric"] == replayed.key_metric == "val_loss"


def test_an_inferred_training_loss_waits_the_grace_period_for_a_validation_metric() -> None:
    settings = Settings()
    early = key_metric_of(None, settings, {"train/loss"}, step=100)
    late = key_metric_of(None, settings, {"train/loss"}, step=500)
    val = key_metric_of(None, settings, {"train/loss", "val/loss"}, step=100)
    assert early is None
    assert late is not None and (late.name, late.mode, late.unlogged) == ("train/loss", "min", None)
    assert val is not None and val.name == "val/loss"


@pytest.fixture
def quickstart_kernel(tmp_path: Path):
    """The README's old quickstart: ``key_metric="val/loss"`` but only ``train/loss`` logged."""
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kernel = Kernel(tmp_path / "run", optimizer=opt, key_metric="val/loss")
    with kernel:
        for record in records(700):
            kernel.log(record.step, record.metrics)
            kernel.step(record.step)
    return kernel  # closed: everything it logged is on disk


def test_a_declared_key_metric_never_logged_falls_back_with_a_warning(
    quickstart_kernel: Kernel, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = quickstart_kernel.run_dir
    kernel = read_kernel_state(run_dir)
    assert key_metric_of(kernel, Settings(), {"train/loss"}, step=499) is None  # grace
    with caplog.at_level(logging.WARNING):
        state = tick_live(run_dir, Settings())
    assert (state["key_metric"], state["key_mode"]) == ("train/loss", "min")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "key metric 'val/loss' is not logged by step 699; the run logs train/loss" in w in w
        and "judging the run by train/loss (min) instead" in w
        for w in warnings
    ), warnings


def test_a_typo_in_the_key_metric_names_the_close_match(tmp_path: Path) -> None:
    settings = Settings.model_validate({"detectors": {"key_metric": "val/los"}})
    names = {"train/loss", "val/loss"}
    key = key_metric_of(None, settings, names, step=600)
    assert key is not None and (key.name, key.unlogged) == ("val/loss", "val/los")
    note = key_metric_note(None, settings, names, step=600)
    assert note is not None and "(did you mean 'val/loss'?)" in note
    assert key_metric_note(None, settings, names, step=100) is None  # still in the grace


def test_no_fallback_at_all_says_so() -> None:
    settings = Settings.model_validate({"detectors": {"key_metric": "val/los"}})
    note = key_metric_note(None, settings, {"lr", "grad_norm"}, step=900)
    assert note is not None and "nothing to fall back to" in note and "grad_norm, lr" in note
    assert "no key metric" in (key_metric_note(None, Settings(), {"lr"}, step=900) or "")


def test_status_warns_about_an_unlogged_key_metric(
    quickstart_kernel: Kernel, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--dir", str(quickstart_kernel.run_dir), "status"])
    out = capsys.readouterr().out
    assert code == 0
    assert "warning: key metric 'val/loss' is not logged by step 699" in out
    assert "the run logs train/loss" in out and "judging the run by train/loss" in out


def test_the_readme_quickstart_logs_the_key_metric_it_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### 1. Put a training loop under the kernel", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "range(1000)" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("range(1000)", "range(101)"), "README.md", "exec"), {})
    run_dir = tmp_path / "runs" / "exp1"
    kernel = read_kernel_state(run_dir)
    assert kernel is not None and kernel.key_metric == "val/loss"
    logged = {n for r in load_run(run_dir).records() for n in r.metrics}
    assert "val/loss" in logged
    assert key_metric_note(kernel, Settings(), logged, step=kernel.last_step or 0) is None
