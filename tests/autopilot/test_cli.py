"""The ``autopilot`` command line against real run directories and a real ``Kernel``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from autopilot.cli import main
from kernel import Kernel, read_freeze, read_kernel_state
from kernel.state import write_kernel_state


@pytest.fixture
def kernel(tmp_path: Path):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    k = Kernel(
        tmp_path / "run",
        optimizer=opt,
        loss_weights={"aux": 0.5, "extra": True},
        key_metric="val/loss",
    )
    yield k
    k.close()


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def queued(run_dir: Path) -> list[dict]:
    lines = (run_dir / "commands.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_one_error_line(code: int, err: str, expected: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err and "Traceback" not in err


# -- set ------------------------------------------------------------------------------------
def test_set_value_queues_a_human_command(kernel: Kernel, capsys) -> None:
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "set", "lr=1e-4", "--reason", "why")
    assert code == 0
    cmd = queued(kernel.run_dir)[0]
    assert (cmd["knob"], cmd["value"], cmd["source"], cmd["reason"]) == ("lr", 1e-4, "human", "why")
    assert out == f"queued {cmd['id']}: lr=0.0001 (applied at the next step)\n"
    assert cmd["id"].startswith("human-")


@pytest.mark.parametrize("text", ["lr=x0.5", "lr=*0.5"])
def test_set_multiplier(kernel: Kernel, capsys, text: str) -> None:
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "set", text)
    assert code == 0 and "lr x0.5" in out
    cmd = queued(kernel.run_dir)[0]
    assert cmd["multiplier"] == 0.5 and "value" not in cmd


def test_set_toggles_and_grad_clip_off(kernel: Kernel, capsys) -> None:
    code, _, _ = run(
        capsys, "--dir", kernel.run_dir, "set", "loss.extra=off", "grad_clip=off", "loss.aux=0.25"
    )
    assert code == 0
    values = [(c["knob"], c["value"]) for c in queued(kernel.run_dir)]
    assert values == [("loss.extra", False), ("grad_clip", 0.0), ("loss.aux", 0.25)]
    assert isinstance(values[0][1], bool) and not isinstance(values[1][1], bool)


def test_set_at_step(kernel: Kernel, capsys) -> None:
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "set", "momentum=0.5", "--at-step", 50)
    assert code == 0 and "(applied at step 50)" in out
    assert queued(kernel.run_dir)[0]["apply_at_step"] == 50


def test_set_unknown_knob_lists_the_knobs(kernel: Kernel, capsys) -> None:
    code, _, err = run(capsys, "--dir", kernel.run_dir, "set", "lrr=1e-4")
    assert_one_error_line(
        code,
        err,
        "unknown knob 'lrr'; this run's knobs are: grad_clip, "
        "loss.aux, loss.extra, lr, momentum, weight_decay",
    )
    assert not (kernel.run_dir / "commands.jsonl").exists()


def test_set_out_of_bounds(kernel: Kernel, capsys) -> None:
    code, _, err = run(capsys, "--dir", kernel.run_dir, "set", "lr=1e-3", "lr=100")
    assert_one_error_line(code, err, "error: lr must be within [1e-07, 10.0], got 100")
    assert not (kernel.run_dir / "commands.jsonl").exists()  # nothing queued, not even lr=1e-3


@pytest.mark.parametrize("text", ["lr", "lr=", "=1", "lr=abc", "lr=x-1", "lr=nan", "l r=1"])
def test_set_bad_syntax(kernel: Kernel, capsys, text: str) -> None:
    code, _, err = run(capsys, "--dir", kernel.run_dir, "set", text)
    assert_one_error_line(code, err, "cannot read")


def test_set_before_any_kernel_and_in_a_missing_dir(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "--dir", tmp_path, "set", "anything=2")
    assert code == 0 and "no kernel has started" in out
    code, _, err = run(capsys, "--dir", tmp_path / "nope", "set", "lr=1")
    assert_one_error_line(code, err, "does not exist")


def test_run_dir_from_the_environment(kernel: Kernel, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPILOT_DIR", str(kernel.run_dir))
    assert run(capsys, "stop")[0] == 0
    monkeypatch.delenv("AUTOPILOT_DIR")
    code, _, err = run(capsys, "stop")
    assert_one_error_line(code, err, "pass --dir D or set AUTOPILOT_DIR")


def step_until_handled(kernel: Kernel) -> threading.Event:
    done = threading.Event()

    def loop() -> None:
        step = 0
        while not done.is_set():
            step += 1
            kernel.step(step)
            time.sleep(0.005)

    threading.Thread(target=loop, daemon=True).start()
    return done


def test_set_wait_prints_the_decision(kernel: Kernel, capsys) -> None:
    done = step_until_handled(kernel)
    try:
        code, out, _ = run(capsys, "--dir", kernel.run_dir, "set", "lr=x0.5", "--wait")
        rejected = run(capsys, "--dir", kernel.run_dir, "resume", "--wait")
    finally:
        done.set()
    assert code == 0 and "applied human-" in out and "lr 0.1 -> 0.05" in out
    assert rejected[0] == 1 and "rejected" in rejected[1] and "not paused" in rejected[1]


def test_stop_reaches_the_kernel(kernel: Kernel, capsys) -> None:
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "stop", "--reason", "enough")
    assert code == 0 and ": stop (applied at the next step)" in out
    kernel.step(1)
    assert kernel.should_stop


# -- status and ledger ----------------------------------------------------------------------
def test_status_without_a_kernel(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "--dir", tmp_path, "status")
    assert code == 1 and f"no kernel has started in {tmp_path} yet" in out


def test_status_says_which_run_segment_and_that_a_killed_run_has_ended(
    kernel: Kernel, capsys
) -> None:
    kernel.step(0)
    kernel.close()
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "status")
    assert "segment     0 (the first run in this directory)" in out
    Kernel(kernel.run_dir).close()  # the script run again: the next segment
    state = read_kernel_state(kernel.run_dir)
    assert state is not None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # kill -9 of the training leaves kernel.json saying "running"
    killed = state.model_copy(update={"status": "running", "pid": dead.pid})
    write_kernel_state(kernel.run_dir, killed)
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "status")
    assert "segment     1 (run 2 in this directory" in out
    assert f"status      running when last heard of, but it has ended (pid {dead.pid}" in out


def test_status_shows_knobs_pending_ledger_and_metrics(kernel: Kernel, capsys) -> None:
    kernel.log(1, {"train/loss": 0.5, "val/loss": 0.7})
    run(capsys, "--dir", kernel.run_dir, "set", "lr=0.05")
    kernel.step(1)
    kernel.log(2, {"train/loss": 0.4})
    kernel.close()
    run(capsys, "--dir", kernel.run_dir, "set", "momentum=0.5", "--at-step", 9, "--next-run")
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "status")
    assert code == 0
    assert "status      closed" in out and "key metric  val/loss (min)" in out
    knobs = {
        line.split()[0]: " ".join(line.split()[1:])
        for line in out.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert knobs["lr"] == "0.05 [1e-07, 10] log"
    assert knobs["loss.extra"] == "true true/false -"
    assert "momentum=0.5  queued, not read by the kernel yet" in out
    assert "applied   human" in out and "lr 0.1 -> 0.05" in out
    assert "latest metrics (step 2): train/loss=0.4" in out and "val/loss=0.7 (step 1)" in out


def test_status_warns_about_a_stale_heartbeat(kernel: Kernel, capsys) -> None:
    state = read_kernel_state(kernel.run_dir)
    assert state is not None
    write_kernel_state(kernel.run_dir, state.model_copy(update={"heartbeat": time.time() - 95}))
    _, out, _ = run(capsys, "--dir", kernel.run_dir, "status")
    assert "warning: no heartbeat for 95 s: is the training process alive?" in out


def test_ledger_table_and_json(kernel: Kernel, capsys) -> None:
    assert "is empty" in run(capsys, "--dir", kernel.run_dir, "ledger")[1]
    run(capsys, "--dir", kernel.run_dir, "set", "lr=x0.5", "loss.extra=false")
    kernel.step(3)
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "ledger")
    header, first, second = out.splitlines()
    assert header.split()[:5] == ["seq", "step", "decision", "source", "command"]
    assert first.split()[:4] == ["1", "3", "applied", "human"] and "lr 0.1 -> 0.05" in first
    assert "loss.extra true -> false" in second
    _, out, _ = run(capsys, "--dir", kernel.run_dir, "ledger", "--json", "--tail", 1)
    assert json.loads(out)["knob"] == "loss.extra"


def test_cli_runs_as_a_module(kernel: Kernel) -> None:
    argv = [sys.executable, "-m", "autopilot", "--dir", str(kernel.run_dir)]
    done = subprocess.run([*argv, "status"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "loss.aux" in done.stdout
    done = subprocess.run([*argv, "set", "lr=oops"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: cannot read 'lr=oops'")
    assert done.stderr.count("\n") == 1


# -- freeze and recipes ---------------------------------------------------------------------
def test_freeze_prod_replay_off(kernel: Kernel, tmp_path: Path, capsys) -> None:
    run_dir = kernel.run_dir
    assert run(capsys, "--dir", run_dir, "freeze", "prod")[0] == 0
    assert read_freeze(run_dir).mode == "prod"
    code, _, err = run(capsys, "--dir", run_dir, "freeze", "replay")
    assert_one_error_line(code, err, "freeze replay needs a recipe: pass --recipe FILE")
    recipe = tmp_path / "recipe.jsonl"
    recipe.write_text('{"step": 5, "knob": "lr", "value": 0.01}\n')
    code, out, _ = run(capsys, "--dir", run_dir, "freeze", "replay", "--recipe", recipe)
    assert code == 0 and read_freeze(run_dir).recipe == str(recipe)
    run(capsys, "--dir", run_dir, "freeze", "off")
    assert read_freeze(run_dir).mode == "off"


def test_recipe_export(kernel: Kernel, tmp_path: Path, capsys) -> None:
    run(capsys, "--dir", kernel.run_dir, "set", "lr=0.02")
    kernel.step(7)
    out_file = tmp_path / "out.jsonl"
    code, out, _ = run(capsys, "--dir", kernel.run_dir, "recipe", "export", "--out", out_file)
    assert code == 0 and out.startswith(f"wrote 1 recipe entry to {out_file}")
    entry = json.loads(out_file.read_text())
    assert (entry["step"], entry["knob"], entry["value"]) == (7, "lr", 0.02)
    code, _, err = run(
        capsys,
        "--dir",
        kernel.run_dir,
        "recipe",
        "export",
        "--out",
        tmp_path / "no" / "such" / "dir.jsonl",
    )
    assert_one_error_line(code, err, "No such file or directory")


def test_usage_mistakes_are_one_line(capsys) -> None:
    code, _, err = run(capsys, "frobnicate")
    assert_one_error_line(code, err, "invalid choice: 'frobnicate'")


def test_set_refuses_a_multiplier_on_a_knob_at_zero(kernel: Kernel, capsys) -> None:
    code, _, err = run(capsys, "--dir", kernel.run_dir, "set", "weight_decay=x2")
    assert code == 2 and "weight_decay is 0, so a multiplier has nothing to scale" in err


def test_set_refuses_a_list_on_a_one_group_knob(kernel: Kernel, capsys) -> None:
    code, _, err = run(capsys, "--dir", kernel.run_dir, "set", "lr=1e-3,1e-4")
    assert code == 2 and "expects one number, got a list of 2" in err
