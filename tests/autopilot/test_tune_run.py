"""The online tuner end to end: a real torch training loop under the Kernel, the autopilot
ticked in lock-step in ``auto`` mode with ``tune.enabled``, the study in a real SQLite file.

The loop tracks a target that jitters at every step with SGD: its weights settle in a cloud
whose spread grows with the lr (variance ``lr / (2 - lr)`` of the jitter's), and the key
metric is the distance of the weights from the target's mean. So every lr cut is better than
the run was heading, and every raise worse: the tuner must keep the cuts, rewind the raises,
and tell its study what each measured.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autopilot.cli import main
from autopilot.config import Settings
from autopilot.decisions import DecisionLog
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from kernel import Kernel, read_ledger
from memory.tuner import RUN_ID

STEPS = 1500
LR = 0.5
DIM = 512


def settings(store: Path) -> Settings:
    return Settings.model_validate(
        # patience: this healthy run is tuned throughout, however many trials are undone
        {
            "tune": {"enabled": True, "seed": 0, "patience": 1000},
            "memory": {"url": f"sqlite:///{store}"},
        }
    )


def train(
    run_dir: Path,
    pilot_settings: Settings,
    make_kernel: Callable[..., Kernel],
    *,
    steps: int = STEPS,
    restart_at: int | None = None,
    mode: str = "auto",
) -> None:
    """Track a jittering target with SGD, ticking the autopilot every 10 steps (a new
    autopilot from ``restart_at``, as a watcher restarted mid-run). In ``suggest`` a person
    approves each proposal as soon as it is queued."""
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(DIM))
    optimizer = torch.optim.SGD([w], lr=LR)
    kernel = make_kernel(optimizer=optimizer, key_metric="val/loss", max_steps=steps)
    pilot = Autopilot(run_dir, mode=mode, settings=pilot_settings)
    queue = ReviewQueue(run_dir, pilot_settings)
    try:
        for step in range(1, steps + 1):
            target = 1.0 + torch.randn(DIM, generator=gen)
            loss = 0.5 * ((w - target) ** 2).sum()  # a gradient of w - target in each weight
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            metrics: dict[str, Any] = {"train/loss": loss.item() / DIM, "lr": lr}
            if step % 10 == 0:
                metrics["val/loss"] = float(((w.detach() - 1.0) ** 2).mean())
            kernel.log(step, metrics)
            kernel.step(step)
            if step == restart_at:
                pilot.close()
                pilot = Autopilot(run_dir, mode=mode, settings=pilot_settings)
            if step % 10 == 0:
                pilot.tick()
                for item in queue.items(step):
                    if item.status == "pending":
                        queue.approve(item.id, current_step=step)
    finally:
        kernel.close()
        pilot.close()


def test_the_tuner_keeps_cuts_rewinds_raises_and_tells_its_study(
    run_dir: Path, tmp_path: Path, make_kernel: Callable[..., Kernel]
) -> None:
    store = tmp_path / "memory.sqlite"
    train(run_dir, settings(store), make_kernel)

    rows = [r for r in read_ledger(run_dir) if r.source == "tune" and r.decision == "applied"]
    changes = [r for r in rows if r.op == "set" and r.intent == "set"]
    rewinds = [r for r in rows if r.op == "rewind"]
    assert len(changes) >= 5 and all(r.knob == "lr" for r in changes)
    assert rewinds, "a raise measured worse is rewound to the segment's start snapshot"
    assert not [r for r in read_ledger(run_dir) if r.intent == "rollback" and r.source != "tune"]

    (name,) = optuna.get_all_study_names(f"sqlite:///{store}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{store}")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 4 and all(t.value is not None for t in done)
    assert {t.user_attrs[RUN_ID] for t in trials} == {next(iter(trials)).user_attrs[RUN_ID]}
    raises = [t for t in done if t.params["lr_log2_factor"] > 0.2]
    cuts = [t for t in done if t.params["lr_log2_factor"] < -0.2]
    assert raises and cuts
    assert max(float(t.value or 0) for t in raises) < min(float(t.value or 0) for t in cuts)
    rewound = [t for t in done if t.user_attrs.get("undo") == "rewind"]
    assert rewound and all(t.user_attrs["verdict"] == "worse" for t in rewound)

    decisions = [v.record for v in DecisionLog(run_dir).read() if v.record.proposer == "tune"]
    numbers = {d.proposal.trial for d in decisions if d.proposal is not None}
    assert {t.number for t in done} <= numbers
    final_lr = [r.after for r in changes][-1]
    assert isinstance(final_lr, float) and final_lr < LR  # it learned to cut


def test_status_shows_the_study_and_watch_switches_the_tuner_on(
    run_dir: Path,
    tmp_path: Path,
    make_kernel: Callable[..., Kernel],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "memory.sqlite"
    config = tmp_path / "autopilot.toml"
    config.write_text(f'[memory]\nurl = "sqlite:///{store}"\n')
    monkeypatch.setenv("AUTOPILOT_CONFIG", str(config))
    train(run_dir, settings(store), make_kernel, steps=400)
    assert main(["--dir", str(run_dir), "status"]) == 0
    off = capsys.readouterr().out
    assert "tuner       off (autopilot watch --tune" in off

    config.write_text(f'[memory]\nurl = "sqlite:///{store}"\n\n[tune]\nenabled = true\n')
    assert main(["--dir", str(run_dir), "status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  tuner"))
    assert "on; study tune-" in line and "measured" in line and "best " in line

    config.write_text(f'[memory]\nurl = "sqlite:///{store}"\n')
    assert main(["--dir", str(run_dir), "watch", "--tune", "--mode", "auto", "--once"]) == 0
    assert "the online tuner proposes (tune: lr)" in capsys.readouterr().out


def test_a_restarted_watcher_goes_on_measuring_the_open_segment(
    run_dir: Path, tmp_path: Path, make_kernel: Callable[..., Kernel]
) -> None:
    store = tmp_path / "memory.sqlite"
    train(run_dir, settings(store), make_kernel, steps=400, restart_at=150)  # trial 0: 100-210
    study = optuna.load_study(
        study_name=optuna.get_all_study_names(f"sqlite:///{store}")[0],
        storage=f"sqlite:///{store}",
    )
    first = study.get_trials()[0]
    assert first.state == TrialState.COMPLETE and first.value is not None
    assert first.user_attrs["applied_step"] < 150 < first.user_attrs["measured_at_step"]
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


def test_in_suggest_mode_trials_wait_for_review_and_are_measured_once_approved(
    run_dir: Path, tmp_path: Path, make_kernel: Callable[..., Kernel]
) -> None:
    store = tmp_path / "memory.sqlite"
    train(run_dir, settings(store), make_kernel, steps=700, mode="suggest")
    items = ReviewQueue(run_dir).items()
    assert items and all(i.proposal.proposer == "tune" for i in items)
    trials = [i.proposal.trial for i in items]
    assert trials == sorted({t for t in trials if t is not None})  # one item per trial
    # a person ordered each trial (source human); the trial stays the tuner's idea
    rows = [r for r in read_ledger(run_dir) if r.proposed_by == "tune" and r.decision == "applied"]
    assert len(rows) == len(items) and all(r.op == "set" and r.intent == "set" for r in rows)
    assert {r.source for r in rows} == {"human"}
    assert [r.command_id for r in rows] == [c for i in items for c in i.command_ids]
    study = optuna.load_study(
        study_name=optuna.get_all_study_names(f"sqlite:///{store}")[0],
        storage=f"sqlite:///{store}",
    )
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) >= 3 and all(t.user_attrs["undo"] is None for t in done)  # a person's
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


def test_the_next_run_of_the_task_continues_its_study(
    tmp_path: Path, make_kernel: Callable[..., Kernel]
) -> None:
    store = tmp_path / "memory.sqlite"
    first, second = tmp_path / "run1", tmp_path / "run2"
    for run in (first, second):
        train(run, settings(store), partial(make_kernel, run_dir=run), steps=500)
    (name,) = optuna.get_all_study_names(f"sqlite:///{store}")  # one task, one study
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{store}").get_trials()
    runs = [t.user_attrs[RUN_ID] for t in trials]
    assert str(first.resolve()) in runs[0] and str(second.resolve()) in runs[-1]
    assert runs == sorted(runs, key=lambda r: str(second.resolve()) in r)  # run 1's, then 2's
    later = [t for t in trials if str(second.resolve()) in t.user_attrs[RUN_ID]]
    assert later[0].number > 0 and later[0].state == TrialState.COMPLETE
