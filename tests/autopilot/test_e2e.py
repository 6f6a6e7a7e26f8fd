"""End to end: the demo training and ``autopilot watch`` as real processes on a run directory.

The training (``autopilot.cli.demo_train``) diverges at step 150 when its schedule bug is on;
the autopilot watches from its own process and has to lower the learning rate through the
kernel. The AI modes talk to the scripted LLM server of this process over loopback.

A rescue test waits for the rescue in the ledger and then stops the training: a run with a
fixed number of steps would race the autopilot, and lose on a busy machine. The runs that
have nothing to wait for (the healthy run, ``autopilot demo``) start with the module and
train beside the other tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from llm_server import ScriptedLLM, answer, status

from autopilot.cli import main
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.guard_context import by_autopilot
from autopilot.review import ReviewItem, ReviewQueue
from kernel import (
    Command,
    LedgerRow,
    append_command,
    new_command_id,
    read_kernel_state,
    read_ledger,
)
from memory import open_store

ROOT = Path(__file__).resolve().parents[2]
SAFETY_S = 120.0
"""Only guards against a hang; every wait below ends on observable state."""
MAX_STEPS = 3000
"""More than any rescue needs; the tests stop the training once they have seen it."""
TEST_MODEL = "test-model"
TEST_KEY_ENV = "AUTOPILOT_E2E_LLM_KEY"
PRICE = {"input": 1.0, "cached_input": 0.5, "output": 2.0}
T = TypeVar("T")

DIVERGENCE = {
    "kind": "divergence",
    "metric": "train/loss",
    "summary": "train/loss jumped tenfold right after lr went from 0.003 to 0.1",
    "evidence": ["lr 0.003 -> 0.1 at step 150", "train/loss x9 its recent best"],
    "confidence": 0.9,
}
PLAN = {
    "actions": [{"knob": "lr", "multiplier": 0.1, "reason": "undo the lr spike"}],
    "confidence": 0.85,
    "reasoning": "the spike in lr caused the divergence",
}


# -- helpers --------------------------------------------------------------------------------
def by_schema(**replies: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """A reply chosen by the schema the client asks for (``AnalystOutput``, ``PlannerOutput``),
    so the analyst and the planner get their answers whatever the order of the calls."""

    def reply(body: dict[str, Any]) -> Any:
        name = str(((body.get("response_format") or {}).get("json_schema") or {}).get("name"))
        return replies.get(name, status(500, f"no scripted answer for schema {name}"))(body)

    return reply


RESCUER = by_schema(AnalystOutput=answer(DIVERGENCE), PlannerOutput=answer(PLAN))


def child_env(base: Path, **extra: str) -> dict[str, str]:
    """A child's environment: this checkout first on the path, state under ``base``, and no
    config or key from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOPILOT_CONFIG", "OPENAI_API_KEY")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"
    state = {"XDG_STATE_HOME": str(base / "state"), "XDG_CONFIG_HOME": str(base / "config")}
    return {**env, **state, **extra}


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python ARGV`` writing to ``log``, in a process group of its own (with its children)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` and the processes it started (after a test that failed midway)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)


def cli(run_dir: Path, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m autopilot --dir RUN_DIR ARGV...``, as a person types it."""
    return subprocess.run(
        [sys.executable, "-m", "autopilot", "--dir", str(run_dir), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=run_dir.parent,
        timeout=SAFETY_S,
    )


def in_process(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """``autopilot ARGV...`` through ``main`` in this process (no interpreter to start); its
    output, once it has exited 0."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"autopilot {argv} exited with {code}: {err}"
    return out


def wait_for(what: str, probe: Callable[[], T | None], run: Run) -> T:
    """Poll ``probe`` until it returns something truthy; fail early if a process of ``run``
    ended, with what its logs and decisions say."""
    deadline = time.monotonic() + SAFETY_S
    while True:
        found = probe()
        if found:
            return found
        procs = {"the training": run.train, "the autopilot": run.watch}
        ended = [name for name, proc in procs.items() if proc.poll() is not None]
        if ended or time.monotonic() > deadline:
            why = f"{' and '.join(ended)} ended" if ended else f"{SAFETY_S} s passed"
            pytest.fail(f"waiting for {what}, {why}\n{run.report()}")
        time.sleep(0.05)


def write_config(run_dir: Path, llm_server: ScriptedLLM | None = None) -> Path:
    """The user's ``autopilot.toml`` for this run (beside the run directory, which is not
    trusted with these): a fast poll, a private spend ledger, the scripted LLM."""
    lines = [
        "[cadence]",
        "poll_interval_s = 0.05",
        "[budget]",
        f"day_ledger = {json.dumps(str(run_dir.parent / 'day-spend.jsonl'))}",
        "[review]",
        "expire_after_steps = 5000",  # a busy machine must not expire one before it is approved
    ]
    if llm_server is not None:
        lines += [
            "[llm]",
            f'base_url = "{llm_server.base_url}"',
            f'model = "{TEST_MODEL}"',
            f'api_key_env = "{TEST_KEY_ENV}"',
            "timeout_s = 30.0",
            "max_retries = 0",
            f'[prices."{TEST_MODEL}"]',
            *(f"{k} = {v}" for k, v in PRICE.items()),
        ]
    run_dir.mkdir(parents=True)
    config = run_dir.parent / f"{run_dir.name}.autopilot.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@dataclass
class Run:
    """A demo training and the autopilot watching it, each in its own process."""

    run_dir: Path
    env: dict[str, str]
    train: subprocess.Popen[bytes]
    watch: subprocess.Popen[bytes]

    def log(self, name: str) -> str:
        return (self.run_dir / name).read_text(encoding="utf-8", errors="replace")

    def report(self) -> str:
        """The logs' tails and the decisions, for a failure message."""
        decisions = [d.model_dump_json() for d in self.decisions().values()]
        return "\n".join(
            [f"train.log: {self.log('train.log')[-1500:]}"]
            + [f"watch.log: {self.log('watch.log')[-3000:]}", "decisions:", *decisions]
        )

    def stop_training(self) -> None:
        """What ``autopilot stop`` does: a ``stop`` command for the next step."""
        append_command(self.run_dir, Command(id=new_command_id("human"), source="human", op="stop"))

    def finish(self) -> None:
        """Wait for the training to end and the autopilot to exit by itself; both cleanly."""
        for proc, log in ((self.train, "train.log"), (self.watch, "watch.log")):
            code = proc.wait(timeout=SAFETY_S)
            assert code == 0, f"{proc.args!r} exited with {code}:\n{self.log(log)[-3000:]}"
        state = read_kernel_state(self.run_dir)
        assert state is not None and state.status == "closed"

    def kill(self) -> None:
        for proc in (self.train, self.watch):
            kill_group(proc)

    def autopilot_rows(self) -> list[LedgerRow]:
        """The rows of the autopilot's changes: its own, and its proposals approved unchanged."""
        return [r for r in read_ledger(self.run_dir) if by_autopilot(r)]

    def applied(self, source: str) -> LedgerRow | None:
        """The first change from ``source`` that the kernel applied."""
        rows = self.autopilot_rows()
        return next((r for r in rows if r.decision == "applied" and r.source == source), None)

    def decisions(self) -> dict[str, DecisionRecord]:
        return {v.record.id: v.record for v in DecisionLog(self.run_dir).read()}


def start_run(
    run_dir: Path,
    *,
    mode: str,
    steps: int = MAX_STEPS,
    pace: float = 0.005,
    spike_lr: float = 0.1,
    llm_server: ScriptedLLM | None = None,
) -> Run:
    """Start ``autopilot watch`` and ``demo_train`` on a fresh ``run_dir``."""
    config = write_config(run_dir, llm_server)
    key = {TEST_KEY_ENV: "test-key"} if llm_server else {}
    env = child_env(run_dir.parent, AUTOPILOT_CONFIG=str(config), **key)
    train_argv = ["-m", "autopilot.cli.demo_train", "--dir", str(run_dir)]
    train_argv += ["--steps", str(steps), "--pace", str(pace), "--spike-lr", str(spike_lr)]
    watch_argv = ["-m", "autopilot", "--dir", str(run_dir), "watch", "--mode", mode]
    return Run(
        run_dir=run_dir,
        env=env,
        watch=spawn(watch_argv, run_dir / "watch.log", env),
        train=spawn(train_argv, run_dir / "train.log", env),
    )


def rescued(run: Run, source: str) -> tuple[LedgerRow, DecisionRecord]:
    """Wait until ``source`` lowered lr after the spike, stop the training, and check that
    the change answers a divergence decision; the ledger row and that decision."""
    row = wait_for(f"an applied {source} change", lambda: run.applied(source), run)
    run.stop_training()
    run.finish()
    assert row.knob == "lr" and row.step is not None and row.step > 150
    assert isinstance(row.before, float) and isinstance(row.after, float)
    assert row.after < row.before
    decisions = run.decisions()
    assert row.proposal_id in decisions, f"{row.proposal_id} not in {list(decisions)}"
    decision = decisions[row.proposal_id]
    assert "divergence" in [d.kind for d in decision.diagnoses], run.report()
    assert decision.route == "kernel" and row.command_id in decision.command_ids
    return row, decision


@dataclass
class Unattended:
    """The runs that nobody has to answer, trained beside the other tests."""

    healthy: Run
    demo: subprocess.Popen[bytes]
    demo_log: Path


@pytest.fixture(scope="module", autouse=True)
def unattended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unattended]:
    """Started before the module's first test; each is checked by a test of its own."""
    base = tmp_path_factory.mktemp("e2e")
    demo_argv = ["-m", "autopilot", "demo", "--dir", str(base / "demo")]
    demo_argv += ["--steps", "400", "--pace", "0.005"]
    runs = Unattended(
        healthy=start_run(base / "healthy", mode="auto", steps=300, spike_lr=0.0),
        demo=spawn(demo_argv, base / "demo.log", child_env(base)),
        demo_log=base / "demo.log",
    )
    yield runs
    runs.healthy.kill()
    kill_group(runs.demo)


@pytest.fixture
def run_in(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """``start_run`` in ``tmp_path``; whatever still runs at the end is killed."""
    runs: list[Run] = []

    def start(**kw: Any) -> Run:
        runs.append(start_run(tmp_path / f"run-{len(runs)}", **kw))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


# -- the tests ------------------------------------------------------------------------------
def test_auto_mode_rescues_a_diverging_run(run_in) -> None:
    run = run_in(mode="auto")
    row, decision = rescued(run, "rules")
    assert decision.proposer == "rules" and decision.fallback_reason is None
    # the watcher process wrote the run and its change to the user's memory store
    store = open_store(Path(run.env["XDG_STATE_HOME"]) / "train-autopilot" / "memory.sqlite")
    [remembered] = store.runs()
    assert remembered.run_dir == str(run.run_dir.resolve()) and remembered.ended_at is not None
    assert remembered.fingerprint.model is not None and remembered.final is not None
    cases = {c.command_id: c for c in store.interventions(run_id=remembered.run_id)}
    assert cases[row.command_id].kind == "divergence" and cases[row.command_id].knob == "lr"
    store.close()


def test_ai_auto_mode_rescues_at_once_by_the_rules_and_judges_the_llm_later(
    run_in, llm_server
) -> None:
    llm_server.script(RESCUER)
    run = run_in(mode="ai_auto", llm_server=llm_server)
    row = wait_for("an applied rules change", lambda: run.applied("rules"), run)

    def judged() -> DecisionRecord | None:
        return next((d for d in run.decisions().values() if d.llm_call), None)

    late = wait_for("a decision on the LLM's late answer", judged, run)
    run.stop_training()
    run.finish()
    assert row.knob == "lr" and row.step is not None and row.step > 150
    assert isinstance(row.before, float) and isinstance(row.after, float) and row.after < row.before
    rescue = run.decisions()[row.proposal_id or ""]
    assert rescue.proposer == "rules" and rescue.route == "kernel", run.report()
    assert (rescue.fallback_reason or "").startswith("urgent: "), run.report()
    assert late.proposer == "ai" and late.llm_call is not None
    assert late.llm_call.status in ("answered", "stale") and late.usage.tokens_in > 0
    schemas = [c["response_format"]["json_schema"]["name"] for c in llm_server.calls]
    assert schemas[:2] == ["AnalystOutput", "PlannerOutput"]
    assert all(c["model"] == TEST_MODEL for c in llm_server.calls)


def test_ai_suggest_proposal_is_approved_from_the_cli(run_in, llm_server, capsys) -> None:
    llm_server.script(RESCUER)
    run = run_in(mode="ai_suggest", pace=0.01, llm_server=llm_server)
    queue = ReviewQueue(run.run_dir)

    def ai_ids() -> set[str]:
        return {d.id for d in run.decisions().values() if d.proposer == "ai"}

    def pending() -> ReviewItem | None:
        """The pending item the LLM's late answer is (or was merged into: the rules queue an
        urgent divergence's identical lr x0.1 first)."""
        ai = ai_ids()
        items = [i for i in queue.items() if i.status == "pending"]
        return next((i for i in items if i.id in ai or ai & set(i.merged_ids)), None)

    item = wait_for("the LLM's proposal in the review queue", pending, run)
    assert [a.describe() for a in item.proposal.actions] == ["lr x0.1"]
    assert run.autopilot_rows() == []  # suggest: nothing is applied without a person
    assert item.id in in_process(capsys, "--dir", run.run_dir, "review", "list")

    approved = cli(run.run_dir, "review", "approve", item.id, env=run.env)
    assert approved.returncode == 0, approved.stderr

    def applied() -> LedgerRow | None:
        return next((r for r in run.autopilot_rows() if r.proposal_id == item.id), None)

    row = wait_for("the approved change in the ledger", applied, run)
    assert row.decision == "applied" and row.knob == "lr"
    # the person ordered it; the idea stays the proposer's
    assert (row.source, row.proposed_by) == ("human", item.proposal.proposer)
    assert isinstance(row.before, float) and row.after == pytest.approx(row.before * 0.1)
    shown = in_process(capsys, "--dir", run.run_dir, "review", "show", item.id)
    assert f"proposal {item.id}  applied" in shown

    in_process(capsys, "--dir", run.run_dir, "stop", "--wait")
    run.finish()


def test_a_healthy_run_is_left_alone(unattended: Unattended) -> None:
    run = unattended.healthy
    run.finish()
    decisions = [d.model_dump(mode="json") for d in run.decisions().values()]
    assert run.autopilot_rows() == [], json.dumps(decisions, indent=1)


def test_the_demo_command_rescues_its_run(unattended: Unattended) -> None:
    code = unattended.demo.wait(timeout=SAFETY_S)
    out = unattended.demo_log.read_text(encoding="utf-8")
    assert code == 0, out
    ledger = out[out.index("\nledger (") :]
    assert any(" applied " in line and " rules " in line for line in ledger.splitlines())
    assert "without the autopilot" in ledger and "with the autopilot" in ledger
    assert "the rescued run ends" in ledger
