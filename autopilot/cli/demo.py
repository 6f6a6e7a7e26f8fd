"""``autopilot demo``: a real training run under the kernel, changed live from another process.

The demo starts ``autopilot.cli.demo_train`` as a subprocess (a small MLP on scikit-learn's
bundled digits, with a learning rate that is too high), follows its ``metrics.jsonl``, and
near step 200 runs the real CLI in a third process: ``autopilot set lr=x0.1``. When training
ends it prints the ledger and the validation loss before and after the change.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from autopilot.cli._common import CliError
from autopilot.cli._demo_watch import Watch
from autopilot.cli._format import decision_text, ledger_lines
from autopilot.cli.demo_train import DEFAULT_LR, EVAL_EVERY
from kernel import LedgerRow, read_ledger

CHANGE = "lr=x0.1"
REASON = f"demo: val loss is noisy at lr {DEFAULT_LR:g}"
_POLL_S = 0.05


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the live change was applied and training finished."""
    if args.steps < 6 * EVAL_EVERY:
        raise CliError(f"--steps must be at least {6 * EVAL_EVERY}, got {args.steps}")
    started = time.monotonic()
    if isinstance(sys.stdout, io.TextIOWrapper):  # show progress live, even through a pipe
        sys.stdout.reconfigure(line_buffering=True)
    run_dir = _fresh_run_dir(args.dir)
    change_at = max(3 * EVAL_EVERY, min(200, args.steps // 3))
    print(f"autopilot demo: an MLP learns scikit-learn's digits under the kernel in {run_dir}")
    print(
        f"Adam starts at lr {DEFAULT_LR:g} (too high); at step ~{change_at} another process "
        "lowers it live.\n"
    )
    proc = _start_training(run_dir, args.steps, args.pace)
    watch = Watch(run_dir)
    try:
        command_id = _follow(proc, watch, run_dir, change_at)
    finally:
        _stop(proc)
    return _report(run_dir, proc.returncode, watch, command_id, time.monotonic() - started)


def _fresh_run_dir(name: str | None) -> Path:
    path = Path(name) if name else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if path.exists() and any(path.iterdir()):
        raise CliError(f"{path} already holds a run; pass a new --dir or delete it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])  # so the children import this checkout
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def _start_training(run_dir: Path, steps: int, pace: float) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "autopilot.cli.demo_train",
        "--dir",
        str(run_dir),
        "--steps",
        str(steps),
        "--pace",
        str(pace),
    ]
    with open(run_dir / "train.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
    print(f"training process started (pid {proc.pid}; its log: {run_dir / 'train.log'})")
    return proc


def _follow(
    proc: subprocess.Popen[bytes], watch: Watch, run_dir: Path, change_at: int
) -> str | None:
    """Print progress until training ends; issue the change at ``change_at``; return its id."""
    command_id, confirmed = None, False
    while True:
        ended = proc.poll() is not None
        if command_id is not None and not confirmed:
            confirmed = _confirm(run_dir, command_id, watch)  # before update: in step order
        watch.update()
        if command_id is None and watch.last_step >= change_at and not ended:
            command_id = _issue_change(run_dir, watch.last_step)
        elif ended:
            watch.finish()
            return command_id
        time.sleep(_POLL_S)


def _issue_change(run_dir: Path, step: int) -> str:
    argv = ["--dir", str(run_dir), "set", CHANGE, "--reason", REASON]
    print(f"\n  step {step}: changing the learning rate from another process:")
    print(f"  $ autopilot {shlex.join(argv)}")
    done = subprocess.run(
        [sys.executable, "-m", "autopilot", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}")
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2 or words[0] != "queued":
        raise CliError(f"the CLI could not queue the change (exit {done.returncode})", code=1)
    return words[1].rstrip(":")


def _confirm(run_dir: Path, command_id: str, watch: Watch) -> bool:
    row = _row_of(run_dir, command_id)
    if row is not None:
        watch.note(row.step or 0, f"  the kernel answered in the ledger: {decision_text(row)}\n")
    return row is not None


def _row_of(run_dir: Path, command_id: str | None) -> LedgerRow | None:
    return next((r for r in read_ledger(run_dir) if r.command_id == command_id), None)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _report(
    run_dir: Path, returncode: int, watch: Watch, command_id: str | None, elapsed: float
) -> int:
    if returncode != 0:
        raise CliError(
            f"the training process exited with code {returncode}; see {run_dir / 'train.log'}",
            code=1,
        )
    print(f"\nledger (autopilot --dir {run_dir} ledger):")
    print("\n".join(ledger_lines(read_ledger(run_dir), indent="  ")))
    row = _row_of(run_dir, command_id)
    if row is None or row.decision != "applied" or row.step is None:
        why = "it arrived after training ended" if row is None else decision_text(row)
        raise CliError(f"the live change was not applied: {why}; try more --steps", code=1)
    print("\nbefore -> after the live change (mean of 3 evaluations):")
    print("\n".join(watch.comparison(row.step)))
    print(f"\ndone in {elapsed:.1f} s. Look around: autopilot --dir {run_dir} status")
    return 0
