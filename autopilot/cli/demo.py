"""``autopilot demo``: a real training run goes wrong and the autopilot rescues it live.

Three processes: the training (``autopilot.cli.demo_train``, a small MLP on scikit-learn's
bundled digits whose learning-rate schedule has a bug: at step 150 it raises Adam's rate from
0.003 to 0.1), the autopilot (``autopilot watch``, in ``auto`` mode, or ``ai_auto`` when the
key named in ``autopilot.toml`` is set), and an identical twin run without the autopilot, to
compare against. The demo prints progress and each decision as it happens, then the ledger,
the decisions and the validation loss of both runs.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

from autopilot.cli._common import CliError
from autopilot.cli._demo_watch import Watch
from autopilot.cli._format import ledger_lines
from autopilot.cli._status_autopilot import memory_line
from autopilot.cli.demo_train import EVAL_EVERY, SPIKE_LR, SPIKE_STEP
from autopilot.cli.watch import DecisionPrinter
from autopilot.config import load_settings

if TYPE_CHECKING:
    from autopilot.service import Serving
from kernel import read_ledger

_POLL_S = 0.05


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the autopilot changed the run and training finished."""
    if args.steps < SPIKE_STEP + 10 * EVAL_EVERY:
        raise CliError(f"--steps must be at least {SPIKE_STEP + 10 * EVAL_EVERY}")
    started = time.monotonic()
    if isinstance(sys.stdout, io.TextIOWrapper):  # show progress live, even through a pipe
        sys.stdout.reconfigure(line_buffering=True)
    run_dir = _fresh_run_dir(args.dir)
    twin_dir = run_dir.with_name(run_dir.name + "-without-autopilot")
    _fresh_run_dir(str(twin_dir))
    mode = "ai_auto" if load_settings(None, run_dir).api_key() else "auto"
    _intro(run_dir, mode)
    serving = _serve(run_dir) if args.serve else None
    procs = [
        _start_training(run_dir, args),
        _start_training(twin_dir, args),
        _start_autopilot(run_dir, mode),
    ]
    watch = Watch(run_dir)
    try:
        _follow(procs, watch, DecisionPrinter(run_dir))
    finally:
        for proc in procs:
            _stop(proc)
    try:
        return _report(run_dir, twin_dir, procs, watch, time.monotonic() - started)
    finally:
        if serving is not None:
            _linger(serving, args.linger)


def _serve(run_dir: Path) -> Serving:
    """The dashboard over the demo's runs (the watch process runs the autopilot)."""
    from autopilot.service import serve_in_thread

    serving = serve_in_thread(run_dir.parent, tick=False)
    print(f"  the dashboard: {serving.url}/dashboard/ (writes need the token: {serving.token})\n")
    return serving


def _linger(serving: Serving, seconds: float | None) -> None:
    """Keep the dashboard up after the run: ``seconds``, or until Ctrl-C."""
    print(
        f"\nthe dashboard stays up at {serving.url}/dashboard/ "
        + (f"for {seconds:g} s" if seconds is not None else "until Ctrl-C")
    )
    try:
        if seconds is None:
            while serving.thread.is_alive():
                time.sleep(0.5)
        else:
            time.sleep(max(seconds, 0.0))
    except KeyboardInterrupt:
        pass
    finally:
        serving.stop()


def _intro(run_dir: Path, mode: str) -> None:
    print(f"autopilot demo: an MLP learns scikit-learn's digits under the kernel in {run_dir}")
    print(
        f"Adam trains at lr 0.003; at step {SPIKE_STEP} a schedule bug raises it to "
        f"{SPIKE_LR:g} and the run diverges."
    )
    how = "the LLM agents (ai_auto)" if mode == "ai_auto" else "the rule policy (auto)"
    print(
        f"The autopilot watches from its own process with {how}; a twin run without it "
        "trains alongside.\n"
    )
    if mode == "auto":
        print("(set the key named in autopilot.toml, e.g. OPENAI_API_KEY, for the AI mode)\n")


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


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=_child_env()
        )


def _start_training(run_dir: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    argv = ["-m", "autopilot.cli.demo_train", "--dir", str(run_dir), "--steps", str(args.steps)]
    argv += ["--pace", str(args.pace), "--spike-lr", str(SPIKE_LR)]
    return _spawn(argv, run_dir / "train.log")


def _start_autopilot(run_dir: Path, mode: str) -> subprocess.Popen[bytes]:
    argv = ["-m", "autopilot", "--dir", str(run_dir), "watch", "--mode", mode]
    print(f"  $ autopilot --dir {run_dir} watch --mode {mode}   (log: {run_dir}/autopilot.log)\n")
    return _spawn(argv, run_dir / "autopilot.log")


def _follow(procs: list[subprocess.Popen[bytes]], watch: Watch, printer: DecisionPrinter) -> None:
    """Print progress and decisions until the training and the autopilot have ended."""
    while True:
        ended = procs[0].poll() is not None and procs[2].poll() is not None
        watch.update()
        printer.print_new()
        if ended:
            watch.finish()
            printer.print_new()
            procs[1].wait(timeout=120)
            return
        time.sleep(_POLL_S)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _final_val_loss(run_dir: Path, window: int = 3) -> float | None:
    from autopilot.metrics_tail import recent_metrics

    values = [r.metrics["val/loss"] for r in recent_metrics(run_dir) if "val/loss" in r.metrics]
    return fmean(values[-window:]) if values else None


def _report(
    run_dir: Path,
    twin_dir: Path,
    procs: list[subprocess.Popen[bytes]],
    watch: Watch,
    elapsed: float,
) -> int:
    for proc, log in zip(procs, ("train.log", "train.log", "autopilot.log"), strict=True):
        if proc.returncode != 0:
            where = twin_dir if proc is procs[1] else run_dir
            raise CliError(f"a demo process exited with {proc.returncode}; see {where / log}", 1)
    rows = [r for r in read_ledger(run_dir) if r.source in ("rules", "ai")]
    print(f"\nledger (autopilot --dir {run_dir} ledger):")
    print("\n".join(ledger_lines(read_ledger(run_dir), indent="  ", width=70)))
    with_pilot, without = _final_val_loss(run_dir), _final_val_loss(twin_dir)
    print("\nval/loss at the end (mean of the last 3 evaluations):")
    print(f"  without the autopilot  {without:.4f}" if without is not None else "  -")
    print(f"  with the autopilot     {with_pilot:.4f}" if with_pilot is not None else "  -")
    if with_pilot is not None and without:
        print(f"  the rescued run ends {1 - with_pilot / without:.0%} lower")
    print(f"\n{memory_line(run_dir)} (autopilot memory list)")
    print(f"\ndone in {elapsed:.1f} s. Look around: autopilot --dir {run_dir} decisions")
    if not any(r.decision == "applied" for r in rows):
        raise CliError("the autopilot changed nothing in this run; see autopilot.log", code=1)
    return 0
