"""The argument parser of ``autopilot``: subcommands and their options, nothing else.

Each subcommand names its handler as ``"module:function"`` (``args.handler``); ``main``
imports the module only when that subcommand runs. A bare module name is one of
``autopilot.cli``; a dotted one is imported as given.

Packages above the autopilot add subcommands through the ``train_autopilot.commands`` entry
point group: each entry is a ``register(sub, common)`` function. That is how ``autopilot
eval`` (the ``evals`` package) joins the command line while the autopilot imports nothing
from it.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import NoReturn

from autopilot.cli._common import ENV_DIR, CliError
from autopilot.config import MODES

PLUGIN_GROUP = "train_autopilot.commands"
OPS = ("stop", "pause", "resume", "checkpoint")
_OP_HELP = {
    "stop": "end the training loop at the next step",
    "pause": "block the training loop at the next step until resume or stop",
    "resume": "continue a paused run",
    "checkpoint": "call the run's save function at the next step",
}


class _Parser(argparse.ArgumentParser):
    """Reports usage mistakes as one ``error:`` line instead of usage text and an exit."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``autopilot`` parser."""
    parser = _Parser(
        prog="autopilot",
        description="Live, bounded, recorded changes to a "
        "running PyTorch training job, through its run directory.",
    )
    parser.add_argument("--dir", help=f"the run directory (default: ${ENV_DIR})")
    common = _Parser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help="the run directory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_set(sub, common)
    for op in OPS:
        _add_op(sub, common, op)
    _add_rewind(sub, common)
    _add_inspect(sub, common)
    _add_freeze(sub, common)
    _add_demo(sub, common)
    _add_watch(sub, common)
    _add_review(sub, common)
    _add_decisions(sub, common)
    _add_reset(sub, common)
    _add_memory(sub, common)
    _add_doctor(sub, common)
    _add_init(sub)
    _add_serve(sub, common)
    _add_launch(sub, common)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(sub, common)
    return parser


def _add_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", help="why; recorded in the ledger")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the kernel has handled the command and print its decision",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long --wait waits (default: 30 s)",
    )


def _add_set(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "set",
        parents=[common],
        help="change knobs live",
        description="Queue one command per assignment. Values: 1e-4, x0.5 or "
        "*0.5 (multiply), true/false/on/off, 1e-3,1e-4 (one per param group), "
        "grad_clip=off.",
    )
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="KNOB=VALUE",
        help="e.g. lr=1e-4, lr=x0.5, loss.aux=0.5, lr[1]=1e-3, grad_clip=off",
    )
    p.add_argument("--at-step", type=int, metavar="N", help="apply at step N, not the next step")
    p.add_argument(
        "--next-run",
        action="store_true",
        help="for the next run in this directory (its run has ended); a plain set is refused then",
    )
    _add_wait(p)
    p.set_defaults(handler="run_commands:cmd_set")


def _add_op(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, op: str) -> None:
    p = sub.add_parser(op, parents=[common], help=_OP_HELP[op], description=_OP_HELP[op])
    _add_wait(p)
    p.set_defaults(handler="run_commands:cmd_op", op=op)


def _add_rewind(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rewind",
        parents=[common],
        help="restore a snapshot of the training state at the next step",
        description="Restore a snapshot the kernel kept (weights, optimizer, scheduler, knob "
        "values, RNG) at the next step: the last one by default. The loop's step counter "
        "goes on. kernel.json lists the snapshots.",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-best", action="store_true", help="the best key metric's snapshot")
    target.add_argument("--to-step", type=int, metavar="N", help="the newest at step N or before")
    target.add_argument("--back", type=int, metavar="K", help="the K-th newest (1: the last)")
    _add_wait(p)
    p.set_defaults(handler="run_commands:cmd_rewind")


def _add_inspect(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="the run's state, knobs and recent changes")
    p.set_defaults(handler="inspect:cmd_status")
    p = sub.add_parser("ledger", parents=[common], help="every command the kernel handled")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N rows")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(handler="inspect:cmd_ledger")


def _add_freeze(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "freeze",
        parents=[common],
        help="stop outside knob changes (prod) or replay a recipe (replay); off lifts it",
    )
    p.add_argument("mode", choices=("off", "prod", "replay"))
    p.add_argument("--recipe", metavar="F", help="the recipe file to replay (freeze replay)")
    p.set_defaults(handler="freeze:cmd_freeze")
    p = sub.add_parser("recipe", parents=[common], help="export the run's knob history")
    p.add_argument("action", choices=("export",))
    p.add_argument("--out", required=True, metavar="F", help="the recipe file to write")
    p.set_defaults(handler="freeze:cmd_recipe")


def _add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="a real training run diverges and the autopilot rescues it live "
        "(rules without a key, the LLM agents with one)",
    )
    p.add_argument("--steps", type=int, default=600, metavar="N", help="training steps (600)")
    p.add_argument(
        "--pace",
        type=float,
        default=0.015,
        metavar="S",
        help="seconds per training step, so the run can be watched (0.015)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="also serve the dashboard on 127.0.0.1 (its address is printed), and keep it up "
        "after the run until Ctrl-C",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=None,
        metavar="S",
        help="with --serve: keep the dashboard up S seconds after the run (default: until Ctrl-C)",
    )
    p.set_defaults(handler="demo:cmd_demo")


def _add_watch(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "watch",
        parents=[common],
        help="run the autopilot beside a training run (until the training ends)",
        description="Read the run's metrics as they arrive, diagnose plateau, divergence, "
        "overfitting and instability, and propose bounded changes: to the review queue "
        "(suggest, ai_suggest) or to the kernel (auto, ai_auto). off only records diagnoses.",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        help="what to do with proposals (default: the config's mode, else suggest)",
    )
    p.add_argument(
        "--config",
        metavar="F",
        help="your autopilot.toml (default: ./ or ~/.config/train-autopilot/)",
    )
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    p.add_argument(
        "--forever", action="store_true", help="keep watching after the training has ended"
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="the online tuner proposes (suggest, auto): TPE over lr moves, its study in "
        "memory ([tune] enabled = true)",
    )
    p.set_defaults(handler="watch:cmd_watch")


def _add_review(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    review = sub.add_parser(
        "review",
        parents=[common],
        help="list, show, approve or reject the autopilot's proposals (suggest modes)",
        description="Proposals wait here in the suggest modes. Approving re-checks them with "
        "the guards on the run as it is now and queues their commands.",
    )
    actions = review.add_subparsers(dest="review_action", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="every proposal and its status")
    p.add_argument("--pending", action="store_true", help="only proposals waiting for a decision")
    p.set_defaults(handler="review:cmd_list")
    p = actions.add_parser("show", parents=[common], help="one proposal in full")
    p.add_argument("id", help="the proposal's id (a unique prefix will do)")
    p.set_defaults(handler="review:cmd_show")
    p = actions.add_parser("approve", parents=[common], help="apply a proposal, within the guards")
    p.add_argument("id", help="the proposal's id (a unique prefix will do)")
    p.add_argument(
        "--edit",
        action="append",
        metavar="KNOB=VALUE",
        help="change an action before approving, as in `autopilot set` (lr=1e-4, lr=x0.5); "
        "repeat for several knobs",
    )
    p.set_defaults(handler="review:cmd_approve")
    p = actions.add_parser("reject", parents=[common], help="decide against a proposal")
    p.add_argument("id", help="the proposal's id (a unique prefix will do)")
    p.add_argument("--why", help="why; kept with the proposal")
    p.set_defaults(handler="review:cmd_reject")
    for p in (review, *actions.choices.values()):
        p.add_argument(
            "--config",
            default=argparse.SUPPRESS,
            metavar="F",
            help="your autopilot.toml (default: ./ or ~/.config/train-autopilot/)",
        )


def _add_reset(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reset",
        parents=[common],
        help="between runs: expire queued commands, reject pending proposals, drop the "
        "autopilot's graph state (the ledger, decisions and metrics stay)",
    )
    p.set_defaults(handler="reset:cmd_reset")


def _add_decisions(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "decisions",
        parents=[common],
        help="what the autopilot decided, why, at what cost, and the measured effect",
    )
    p.add_argument("--tail", type=int, metavar="N", help="only the last N decisions")
    p.add_argument("--json", action="store_true", help="one JSON object per decision")
    p.set_defaults(handler="decisions:cmd_decisions")


def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented autopilot.toml with every setting at its default",
        description="Writes ./autopilot.toml (or PATH, or with --user your own config file); "
        "refuses to overwrite a file without --force.",
    )
    p.add_argument("path", nargs="?", metavar="PATH", help="where (default: ./autopilot.toml)")
    p.add_argument("--user", action="store_true", help="write your config file in XDG_CONFIG_HOME")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(handler="init:cmd_init")


def _add_doctor(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check the config, the run, its key metric, memory and the LLM before deciding",
        description="Each check prints ok, warn or FAIL with what to do; exit 1 on a FAIL. "
        "With a key set, the LLM gets one real call (its latency, tokens and cost).",
    )
    p.add_argument("--config", default=argparse.SUPPRESS, metavar="F", help="your autopilot.toml")
    p.add_argument("--no-call", action="store_true", help="check the key and price, call nothing")
    p.set_defaults(handler="doctor:cmd_doctor")


def _add_memory(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    memory = sub.add_parser(
        "memory",
        parents=[common],
        help="the runs the memory store remembers, their interventions and lessons",
        description="The store the autopilot writes as runs end: --memory URL, else the "
        "config's [memory] url, else $AUTOPILOT_MEMORY_URL, else the file in your state dir.",
    )
    actions = memory.add_subparsers(dest="memory_action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every remembered run, oldest first")
    p.add_argument("--task", metavar="T", help="only the runs of task T (its name or key)")
    p.set_defaults(handler="memory:cmd_list")
    p = actions.add_parser("show", help="one run and its interventions")
    p.add_argument("run", help="the run's id (a unique prefix will do)")
    p.set_defaults(handler="memory:cmd_show")
    p = actions.add_parser("lessons", help="what the measured interventions teach, per task")
    p.add_argument("--task", metavar="T", help="only task T (its name or key)")
    p.set_defaults(handler="memory:cmd_lessons")
    p = actions.add_parser("forget", help="delete a run and its interventions (asks nothing)")
    p.add_argument("run", help="the run's exact id")
    p.set_defaults(handler="memory:cmd_forget")
    p = actions.add_parser("export", help="every run and intervention to a JSON file")
    p.add_argument("file", metavar="F", help="the file to write (-: standard output)")
    p.set_defaults(handler="memory:cmd_export")
    for p in (memory, *actions.choices.values()):
        p.add_argument(
            "--memory",
            default=argparse.SUPPRESS,
            metavar="URL",
            help="the store: sqlite:///PATH, a path, or postgresql://USER:PASSWORD@HOST:PORT/DB",
        )
        p.add_argument(
            "--config", default=argparse.SUPPRESS, metavar="F", help="your autopilot.toml"
        )


def _add_launch(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "launch",
        parents=[common],
        help="train module:fn in a child process under an autopilot (and the API)",
        description="Call fn(run_dir, max_steps) of module in a child process, run the "
        "autopilot over the run directory in this one, optionally serve the API on a free "
        "loopback port; wait for the training to end (Ctrl-C: stop). Exit code: the training's.",
    )
    p.add_argument("target", metavar="module:fn", help="the training function")
    p.add_argument("--mode", choices=MODES, default="suggest", help="the autopilot's mode")
    p.add_argument("--serve", action="store_true", help="also serve /api/v1 over the run")
    p.add_argument("--max-steps", type=int, metavar="N", help="passed to fn as max_steps")
    p.add_argument("--config", metavar="F", help="your autopilot.toml")
    p.set_defaults(handler="launch:cmd_launch")


def _add_serve(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        help="the autopilot of every run under a root, and the HTTP API, in one service",
        description="Find the run directories under ROOT as they appear, tick the autopilot "
        "of each run whose mode is set (autopilot mode, the API, --mode or your config), and "
        "serve /api/v1. Writes need the bearer token; beyond loopback, reads do too.",
    )
    p.add_argument("--runs", required=True, metavar="ROOT", help="the folder of run directories")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8421, help="the port (8421)")
    p.add_argument("--mode", choices=MODES, help="the mode of runs that set none themselves")
    p.add_argument("--config", metavar="F", help="your autopilot.toml")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes that tick the runs (1: this one); one per core for many busy runs",
    )
    p.add_argument(
        "--threads", type=int, default=4, metavar="N", help="tick threads in each process (4)"
    )
    p.set_defaults(handler="serve:cmd_serve")
    p = sub.add_parser(
        "mode",
        parents=[common],
        help="show or set the mode autopilot serve ticks this run in",
    )
    p.add_argument("mode", nargs="?", choices=(*MODES, "unset"), help="the new mode; unset: none")
    p.set_defaults(handler="serve:cmd_mode")
