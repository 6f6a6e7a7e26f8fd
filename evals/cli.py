"""``autopilot eval replay`` and ``autopilot eval bench``: the harness on the command line.

Registered with the ``autopilot`` command through the ``train_autopilot.commands`` entry
point (see ``autopilot.cli._parser``), so the autopilot imports nothing from ``evals``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from autopilot.cli._common import CliError, DefaultsHelpFormatter

if TYPE_CHECKING:
    from tqdm import tqdm

    from autopilot.config import Settings
    from evals.results import BenchReport, MultiReport, ReplayReport
    from evals.runs import RecordedRun

DEFAULT_POLICIES = "none,rules,ai,tune"
DEFAULT_TRIALS = 6
MULTI_RUNS = 4
"""``--multi`` without a number: runs per sequence."""
LOG_NAME = "results.jsonl"
"""The results log's name under ``--out`` when ``--log`` names none."""
HANDLERS = "evals.cli"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` and its actions to the ``autopilot`` parser (imports nothing heavy: it
    runs for every ``autopilot`` command)."""
    from evals.scoring import DEFAULT_TOLERANCE, DEFAULT_TOLERANCE_EVALS

    evals = sub.add_parser(
        "eval",
        help="score policies offline: replay recorded runs, or bench them on real training",
        description="replay: feed recorded runs through the autopilot in shadow mode and "
        "score its diagnoses against their labels. bench: train tasks under each policy "
        "and compare the final key metric with the best static configuration.",
        formatter_class=DefaultsHelpFormatter,
    )
    actions = evals.add_subparsers(dest="eval_action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "replay",
        help="detection quality on recorded runs (precision, recall, F1, latency)",
        description="Each RUN_DIR holds metrics.jsonl and, when labelled, labels.json; a "
        "Hugging Face trainer_state.json, or a directory holding one, is imported first "
        "(into OUT/imported/). A directory of such runs (evals/corpus) stands for all of them.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="recorded runs or trainer_state.json files, or directories of them",
    )
    p.add_argument(
        "--policy", choices=("rules", "ai"), default="rules", help="who proposes: rules or LLM"
    )
    p.add_argument("--config", metavar="F", help="autopilot.toml (provider, detectors, cadence)")
    p.add_argument("--out", required=True, metavar="OUT", help="where the report goes")
    p.add_argument(
        "--tolerance",
        type=int,
        default=DEFAULT_TOLERANCE,
        metavar="STEPS",
        help="a first alarm this soon after onset is a detection",
    )
    p.add_argument(
        "--tolerance-evals",
        type=int,
        default=DEFAULT_TOLERANCE_EVALS,
        metavar="EVALS",
        help="a first alarm within this many evaluations of the key metric after onset is "
        "a detection too (whichever window ends later: runs that evaluate rarely)",
    )
    p.add_argument("--key-metric", metavar="NAME", help="default: val/loss, else inferred")
    _add_log(p)
    p.set_defaults(handler=f"{HANDLERS}:cmd_replay")

    p = actions.add_parser(
        "bench",
        help="closed loop: real training under none, rules, ai and tune, against an oracle",
        description="Train every task under each policy and seed, and compare the final key "
        "metric with the best static configuration found by a grid sweep (the oracle).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        default="all",
        help="comma-separated task or setup names, or all (see --list)",
    )
    p.add_argument(
        "--policies",
        help="comma-separated, of none,rules,ai,tune,online (default: none,rules,ai,tune); "
        "with --multi, of rules,online,tune,random (default: all four)",
    )
    p.add_argument("--seeds", type=int, default=3, help="training runs per task and policy")
    p.add_argument(
        "--trials",
        type=int,
        help="training runs per Optuna search (default: 6); with --multi, at most this many "
        "trials per search (default: 12)",
    )
    p.add_argument(
        "--multi",
        type=int,
        nargs="?",
        const=MULTI_RUNS,
        metavar="N",
        help="multi-run mode: per bad-start task, policy and seed, N runs (%(const)s when "
        "omitted) one after another sharing one memory store; reports the runs (trials) "
        "needed to come within 2%% of the oracle (lock-step only)",
    )
    p.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="training processes"
    )
    p.add_argument("--no-oracle", action="store_true", help="skip the grid sweep")
    p.add_argument("--steps", type=int, help="shorten every run to N steps (smoke tests)")
    p.add_argument(
        "--live",
        action="store_true",
        help="run the rules and ai policies as a real `autopilot watch` process beside a "
        "training paced at --step-ms, with the kernel's default cadences (default: lock-step, "
        "the loop ticks the autopilot; none, tune and the oracle are the same in both)",
    )
    p.add_argument(
        "--step-ms",
        type=float,
        default=10.0,
        metavar="MS",
        help="--live: milliseconds per training step (the loop sleeps the rest of each)",
    )
    p.add_argument("--config", metavar="F", help="autopilot.toml for the rules and ai policies")
    p.add_argument("--out", metavar="OUT", help="where the report and run directories go")
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    _add_log(p)
    p.set_defaults(handler=f"{HANDLERS}:cmd_bench")


def _add_log(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log",
        metavar="F",
        help=f"results log to append the headline figures to (default: OUT/{LOG_NAME}; "
        "'' for none)",
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay, score, write ``diagnoses.jsonl``, the report and the results log."""
    from evals.errors import EvalError
    from evals.replay import replay
    from evals.report import write_replay_report

    settings = _settings(args.config)
    out = Path(args.out)
    runs = _runs(args.runs, out)
    with _progress(len(runs), "replay", "run") as progress:
        try:
            report, alarms = replay(
                runs,
                policy=args.policy,
                settings=settings,
                tolerance=args.tolerance,
                tolerance_evals=args.tolerance_evals,
                key_metric=args.key_metric,
                on_run=lambda r: _advance(progress, r.run),
            )
        except EvalError as exc:
            raise CliError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnoses.jsonl").write_text("".join(a.model_dump_json() + "\n" for a in alarms))
    (out / "replay.json").write_text(report.model_dump_json(indent=1))
    curves = {run.name: run.curve(r.key_metric) for run, r in zip(runs, report.runs, strict=True)}
    path = write_replay_report(report, alarms, out, curves)
    _log(args.log, out, report)
    _print_replay(report, path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Train, aggregate, write ``bench.json``, the report and the results log."""
    from evals.bench import BenchPlan, resolve_tasks, run_bench
    from evals.errors import EvalError
    from evals.report import bench_mode, bench_table, write_bench_report
    from evals.tasks import TASKS

    if args.list:
        for name, task in TASKS.items():
            print(f"{name:24s} {task.description}")
        return 0
    if not args.out:
        raise CliError("--out is required: the directory for the report and the run directories")
    settings = _settings(args.config)
    if args.multi is not None:
        return _cmd_multi(args, settings)
    policies = [p.strip() for p in (args.policies or DEFAULT_POLICIES).split(",") if p.strip()]
    skipped = {}
    if "ai" in policies and settings.api_key() is None:
        policies.remove("ai")
        skipped["ai"] = (
            f"no key in ${settings.llm.api_key_env}: set it (and llm.base_url) to bench the LLM"
        )
    try:
        plan = BenchPlan(
            tasks=resolve_tasks(args.tasks),
            policies=policies,
            seeds=args.seeds,
            trials=DEFAULT_TRIALS if args.trials is None else args.trials,
            workers=args.workers,
            oracle=not args.no_oracle,
            steps=args.steps,
            settings=settings,
            mode="live" if args.live else "lockstep",
            step_ms=args.step_ms,
        )
    except EvalError as exc:
        raise CliError(str(exc)) from None
    from evals.bench import plan_jobs

    out = Path(args.out)
    with _progress(len(plan_jobs(plan)), "bench", "job") as progress:
        report = run_bench(plan, out, on_done=lambda job, _: _advance(progress, job.label))
    report = report.model_copy(update={"skipped": skipped})
    (out / "bench.json").write_text(report.model_dump_json(indent=1))
    path = write_bench_report(report, out)
    _log(args.log, out, report)
    print(f"mode: {bench_mode(report)}\n")
    print(bench_table(report))
    for policy, why in skipped.items():
        print(f"skipped {policy}: {why}")
    print(f"\nreport: {path}  ({report.wall_s:.0f} s)")
    return 0


def _cmd_multi(args: argparse.Namespace, settings: Settings) -> int:
    """``--multi N``: the oracle's sweep, then every sequence; ``multi.json``, ``multi.md``,
    the results log and the tables."""
    from evals.bench import resolve_tasks
    from evals.bench.multi import DEFAULT_TRIALS as MULTI_TRIALS
    from evals.bench.multi import MULTI_POLICIES, MultiPlan, bad_starts, count_jobs, run_multi
    from evals.bench.multi_report import multi_table, notes, runs_table, write_multi_report
    from evals.errors import EvalError
    from evals.results import MEMORY_POLICIES

    if args.live or args.no_oracle:
        raise CliError("--multi runs in lock-step against the oracle: drop --live / --no-oracle")
    policies = [p.strip() for p in (args.policies or ",".join(MULTI_POLICIES)).split(",")]
    try:
        named = resolve_tasks(args.tasks)
        plan = MultiPlan(
            tasks=bad_starts(named),
            policies=[p for p in policies if p],
            runs=args.multi,
            trials=MULTI_TRIALS if args.trials is None else args.trials,
            seeds=args.seeds,
            workers=args.workers,
            steps=args.steps,
            settings=settings,
        )
    except EvalError as exc:
        raise CliError(str(exc)) from None
    good = [t for t in named if t not in plan.tasks]
    skipped = {"good starts": ", ".join(good)} if good else {}
    out = Path(args.out)
    with _progress(count_jobs(plan), "bench --multi", "job") as progress:
        report = run_multi(plan, out, on_done=lambda label: _advance(progress, label))
    report = report.model_copy(update={"skipped": skipped})
    (out / "multi.json").write_text(report.model_dump_json(indent=1))
    path = write_multi_report(report, out)
    _log(args.log, out, report)
    print(multi_table(report))
    print()
    print(runs_table(report, MEMORY_POLICIES))
    for line in [*notes(report), *(f"skipped {k}: {v}" for k, v in skipped.items())]:
        print(line)
    print(f"\nreport: {path}  ({report.wall_s:.0f} s)")
    return 0


def _progress(total: int, label: str, unit: str) -> tqdm:
    """A progress bar on standard error: redrawn in place on a terminal, a line every 10 s
    elsewhere (CI, a pipe), so a long bench leaves a short log."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=label, unit=unit, mininterval=0.1 if tty else 10.0)


def _advance(bar: tqdm, note: str) -> None:
    bar.set_postfix_str(note, refresh=False)
    bar.update()


def _log(log: str | None, out: Path, report: ReplayReport | BenchReport | MultiReport) -> None:
    """Append the report's headline figures to ``log`` (``OUT/results.jsonl`` when ``None``,
    nothing when empty)."""
    from evals.results_log import append_result

    if log == "":
        return
    path = out / LOG_NAME if log is None else Path(log)
    append_result(path, report, command=["autopilot", *sys.argv[1:]])


def _settings(config: str | None) -> Settings:
    from autopilot.config import load_settings
    from autopilot.errors import ConfigError

    try:
        return load_settings(config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _runs(paths: list[str], out: Path) -> list[RecordedRun]:
    """Recorded runs: each path a run, a ``trainer_state.json`` or a directory holding one
    directly (imported under ``OUT/imported/``), or a directory whose subdirectories are
    any of these."""
    from evals.errors import RunFormatError

    runs: list[RecordedRun] = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise CliError(f"{path} does not exist; pass recorded runs or trainer_state.json")
        try:
            runs += [_open(target, out, runs) for target in _targets(path)]
        except RunFormatError as exc:
            raise CliError(str(exc)) from None
    return runs


def _targets(path: Path) -> list[Path]:
    """``path`` when it is a run (recorded or a Trainer's state), else its children that are."""
    from evals.importers import trainer_state_path
    from kernel.metrics import METRICS_FILE

    def is_run(p: Path) -> bool:
        return (p / METRICS_FILE).is_file() or trainer_state_path(p) is not None

    if is_run(path) or not path.is_dir():
        return [path]
    children = [p for p in sorted(path.iterdir()) if p.is_dir() and is_run(p)]
    return children or [path]  # load_run says what a run directory needs


def _open(target: Path, out: Path, taken: list[RecordedRun]) -> RecordedRun:
    """Load a recorded run in place, or import a Trainer's state into a fresh directory named
    after the one holding it (``-2``, ``-3``... when that name is taken)."""
    import shutil

    from evals.importers import import_trainer_state, trainer_state_path
    from evals.runs import load_run
    from kernel.metrics import METRICS_FILE

    state = trainer_state_path(target)
    if (target / METRICS_FILE).is_file():
        return load_run(target)
    if state is None:
        raise CliError(
            f"{target}: neither a recorded run ({METRICS_FILE}) nor a Hugging Face "
            "trainer_state.json, nor a directory of them (checkpoint-*/ folders are not "
            "searched: pass the one you mean)"
        )
    names = {run.name for run in taken}
    base = state.parent.resolve().name
    name = next(n for i in range(1, len(names) + 2) if (n := _nth(base, i)) not in names)
    dest = out / "imported" / name
    if dest.exists():  # an earlier replay into the same OUT: import afresh
        shutil.rmtree(dest)
    return import_trainer_state(state, dest)


def _nth(base: str, i: int) -> str:
    return base if i == 1 else f"{base}-{i}"


def _print_replay(report: ReplayReport, path: Path) -> None:
    from evals.report import replay_table, replay_totals

    print(replay_table(report))
    print()
    for line in replay_totals(report):
        print(line)
    rate = report.false_alarms_per_1k_healthy_steps
    print(f"alarms per 1,000 healthy steps: {'-' if rate is None else f'{rate:.2f}'}")
    if report.policy == "ai":
        print(f"tokens per run: {report.tokens_per_run:.0f}, USD per run: {report.usd_per_run:.4f}")
    print(f"report: {path}  ({report.wall_s:.1f} s)")
