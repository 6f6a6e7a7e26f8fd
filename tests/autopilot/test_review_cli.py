"""``autopilot review`` and ``autopilot decisions`` through ``main``, on real run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _runs import mul, proposal, write_run

from autopilot.cli import main
from autopilot.config import Settings
from autopilot.decisions import DecisionLog, DecisionRecord, EffectRecord
from autopilot.diagnoses import Diagnosis
from autopilot.guards import GuardContext, check
from autopilot.review import ReviewQueue
from autopilot.tokens import Usage
from kernel import read_kernel_state, read_ledger
from kernel.state import write_kernel_state

PLATEAU = Diagnosis(
    kind="plateau", metric="val/loss", step=1000, message="val/loss flat for 400 steps"
)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, expected: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err and "Traceback" not in err


def queue_item(run_dir: Path, *actions, step: int = 1000, item_id: str = "rv-1") -> None:
    queue = ReviewQueue(run_dir, Settings())
    p = proposal(*(actions or (mul("lr", 0.5, reason="escape the plateau"),)))
    verdicts = check(p, GuardContext.from_run(run_dir), queue.settings)
    item = queue.new_item(
        step=step, proposal=p, verdicts=verdicts, diagnoses=[PLATEAU], item_id=item_id
    )
    queue.add(item)


def commands(run_dir: Path) -> list[dict]:
    path = run_dir / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_run(tmp_path, step=1000)
    return tmp_path


# -- review ---------------------------------------------------------------------------------
def test_list_empty_then_one_item(run_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "--dir", run_dir, "review", "list")
    assert code == 0 and out == f"no proposals in the review queue of {run_dir}\n"
    queue_item(run_dir)
    code, out, _ = run(capsys, "--dir", run_dir, "review", "list", "--pending")
    header, row = out.splitlines()
    assert header.split() == ["id", "step", "status", "proposer", "actions", "cost", "diagnosis"]
    assert row.split() == ["rv-1", "1000", "pending", "ai", "lr", "x0.5", "$0.0000", "plateau"]


def test_show_prints_the_diagnosis_and_verdicts(run_dir: Path, capsys) -> None:
    queue_item(run_dir)
    code, out, _ = run(capsys, "review", "show", "rv", "--dir", run_dir)
    assert code == 0
    assert out.startswith("proposal rv-1  pending (expires after step 1500)\n")
    assert "found: plateau on val/loss (medium): val/loss flat for 400 steps" in out
    assert "verdicts when proposed:" in out
    verdict = next(line for line in out.splitlines() if "lr x0.5" in line)
    assert verdict.split()[:7] == ["0", "lr", "x0.5", "allowed", "0.1", "->", "0.05"]


def test_approve_queues_the_commands(run_dir: Path, capsys) -> None:
    queue_item(run_dir)
    code, out, _ = run(capsys, "--dir", run_dir, "review", "approve", "rv-1")
    assert code == 0
    # the person ordered it (source human); the idea stays the proposer's (ids included)
    assert out.startswith(
        "approved rv-1: queued 1 command from human, as proposed by ai (applied at the next step)\n"
    )
    assert "  ai-rv-1-0: lr x0.5\n" in out
    (cmd,) = commands(run_dir)
    fields = ("id", "source", "proposed_by", "proposal_id", "multiplier")
    assert tuple(cmd[f] for f in fields) == ("ai-rv-1-0", "human", "ai", "rv-1", 0.5)
    assert "approved in review rv-1; escape the plateau" in cmd["reason"]
    _, out, _ = run(capsys, "--dir", run_dir, "review", "show", "rv-1")
    assert "decided: approved at step 1000" in out and "commands: ai-rv-1-0" in out


def test_an_edit_is_parsed_like_set_and_clamped_by_the_guards(run_dir: Path, capsys) -> None:
    queue_item(run_dir)
    code, _, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1", "--edit", "lr=100")
    assert_one_error_line(code, err, "lr must be within [1e-07, 10.0], got 100")
    code, _, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1", "--edit", "lrr=1")
    assert_one_error_line(code, err, "unknown knob 'lrr'")
    code, out, _ = run(
        capsys, "--dir", run_dir, "review", "approve", "rv-1", "--edit", "lr=x10", "--edit",
        "grad_clip=1",
    )  # fmt: skip
    # what a person edited is theirs: recorded with source human, not the proposer's
    assert code == 0 and "human-rv-1-0: lr x2" in out and "human-rv-1-1: grad_clip=1" in out
    assert out.startswith("approved rv-1: queued 2 commands from human (applied at the next")
    assert "capped at x2 (guards.max_up)" in out
    assert [c.get("multiplier", c.get("value")) for c in commands(run_dir)] == [2.0, 1.0]


def test_the_run_config_sets_the_guards(run_dir: Path, capsys) -> None:
    (run_dir / "autopilot.toml").write_text("[guards]\nmax_up = 1.5\n")
    queue_item(run_dir)
    code, out, _ = run(capsys, "--dir", run_dir, "review", "approve", "rv-1", "--edit", "lr=x3")
    assert code == 0 and "lr x1.5" in out and "0.1 -> 0.15" in out
    bad = run_dir / "bad.toml"
    bad.write_text("[guards]\nmax_upp = 1\n")
    code, _, err = run(capsys, "--dir", run_dir, "review", "list", "--config", bad)
    assert_one_error_line(code, err, "guards.max_upp: unknown setting")


def test_reject_then_approve_is_refused(run_dir: Path, capsys) -> None:
    queue_item(run_dir)
    code, out, _ = run(capsys, "--dir", run_dir, "review", "reject", "rv-1", "--why", "warmup")
    assert code == 0 and out == "rejected rv-1: warmup\n"
    code, _, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1")
    assert_one_error_line(code, err, "proposal rv-1 was already rejected at step 1000")
    assert commands(run_dir) == []


def test_approving_an_expired_proposal_is_refused(run_dir: Path, capsys) -> None:
    queue_item(run_dir, step=700)
    write_run(run_dir, step=1750)
    code, _, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1")
    assert_one_error_line(
        code, err, "proposal rv-1 expired at step 1200 (the run is at step 1750); the autopilot "
        "will propose again if the problem persists",
    )  # fmt: skip
    assert "expired" in run(capsys, "--dir", run_dir, "review", "list")[1]


def test_unknown_id_and_all_rejected(run_dir: Path, capsys) -> None:
    code, _, err = run(capsys, "--dir", run_dir, "review", "show", "nope")
    assert_one_error_line(code, err, "no proposal 'nope' in the review queue")
    queue_item(run_dir, mul("lr", 0.5))
    write_run(run_dir, step=1000, freeze="prod")
    code, _, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1")
    assert_one_error_line(code, err, "the guards reject every action now")


# -- decisions ------------------------------------------------------------------------------
def test_decisions_print_readably(run_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "--dir", run_dir, "decisions")
    assert code == 0 and out.startswith(f"no decisions in {run_dir} yet")
    p = proposal(mul("lr", 0.5))
    verdicts = check(p, GuardContext.from_run(run_dir), Settings())
    log = DecisionLog(run_dir)
    for n, route in enumerate(["kernel", "none"]):
        log.append(
            DecisionRecord(
                id=f"d{n}",
                step=1000 + n,
                mode="ai_auto",
                diagnoses=[PLATEAU],
                proposer="rules",
                fallback_reason="no API key in $OPENAI_API_KEY",
                usage=Usage(tokens_in=1200, calls=1),
                proposal=p,
                verdicts=verdicts,
                route=route,  # type: ignore[arg-type]
                command_ids=["rules-d0-0"] if route == "kernel" else [],
            )
        )
    log.append(
        EffectRecord(
            decision_id="d0",
            command_id="rules-d0-0",
            knob="lr",
            applied_step=1001,
            horizon_steps=100,
            key_metric="val/loss",
            projected=0.5,
            observed=0.48,
            change_rel=0.04,
            verdict="better",
            measured_at_step=1101,
        )
    )
    code, out, _ = run(capsys, "--dir", run_dir, "decisions")
    first, second = out.split("\n\n")
    assert first.startswith("step 1000  d0  mode ai_auto -> kernel\n")
    assert "diagnosis  plateau on val/loss (medium): val/loss flat for 400 steps" in first
    assert "proposer   rules (fallback: no API key in $OPENAI_API_KEY)  prompt -" in first
    assert "tokens 1200 in / 0 out  $0.0000" in first
    assert "lr x0.5    allowed  0.1 -> 0.05" in first and "commands   rules-d0-0" in first
    assert "effect     lr at step 1001: val/loss better (+4.0% vs projection" in first
    assert "effect     not measured yet" in second
    _, out, _ = run(capsys, "--dir", run_dir, "decisions", "--json", "--tail", 1)
    view = json.loads(out)
    assert view["record"]["id"] == "d1" and view["effects"] == []
    code, _, err = run(capsys, "--dir", run_dir, "decisions", "--tail", 0)
    assert_one_error_line(code, err, "--tail must be at least 1, got 0")


def test_decisions_name_the_rule_of_each_verdict(run_dir: Path, capsys) -> None:
    p = proposal(mul("lr", 0.5), mul("no_such_knob", 2.0))
    verdicts = check(p, GuardContext.from_run(run_dir), Settings())
    record = DecisionRecord(id="d0", step=1000, mode="auto", proposal=p, verdicts=verdicts)
    DecisionLog(run_dir).append(record)
    _, out, _ = run(capsys, "--dir", run_dir, "decisions")
    assert "lr x0.5          allowed                  0.1 -> 0.05" in out  # no guard stepped in
    assert "no_such_knob x2  rejected (unknown_knob)  -" in out


# -- end to end with a real kernel ----------------------------------------------------------
def test_an_approved_proposal_reaches_the_kernel(tmp_path: Path, make_kernel, capsys) -> None:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kernel = make_kernel(run_dir=tmp_path / "run", optimizer=opt)
    kernel.step(1)
    queue_item(kernel.run_dir, step=1, item_id="rv-e2e")
    code, _, _ = run(capsys, "--dir", kernel.run_dir, "review", "approve", "rv-e2e")
    assert code == 0
    kernel.step(2)
    (row,) = read_ledger(kernel.run_dir)
    assert (row.decision, row.command_id) == ("applied", "ai-rv-e2e-0")
    assert (row.source, row.proposed_by) == ("human", "ai")  # the kernel keeps whose idea it was
    assert (row.proposal_id, row.before, row.after, row.step) == ("rv-e2e", 0.1, 0.05, 2)
    assert opt.param_groups[0]["lr"] == 0.05
    state = read_kernel_state(kernel.run_dir)
    assert state is not None and state.knobs[0].name == "lr" and state.knobs[0].value == 0.05
    _, out, _ = run(capsys, "--dir", kernel.run_dir, "review", "list")
    assert out.splitlines()[1].split()[:3] == ["rv-e2e", "1", "applied"]


def test_approve_on_a_closed_run_says_the_run_is_closed(run_dir: Path, capsys) -> None:
    """The bug: it queued the commands and said "applied at the next step"."""
    queue_item(run_dir)
    state = read_kernel_state(run_dir)
    assert state is not None
    write_kernel_state(run_dir, state.model_copy(update={"status": "closed"}))
    code, out, err = run(capsys, "--dir", run_dir, "review", "approve", "rv-1")
    assert_one_error_line(code, err, f"the run in {run_dir} is closed")
    assert "applied at the next step" not in out + err and commands(run_dir) == []


def test_list_shows_what_was_approved_not_what_was_proposed(run_dir: Path, capsys) -> None:
    queue_item(run_dir)
    run(capsys, "--dir", run_dir, "review", "approve", "rv-1", "--edit", "lr=x0.25")
    _, out, _ = run(capsys, "--dir", run_dir, "review", "list")
    assert out.splitlines()[1].split()[:6] == ["rv-1", "1000", "approved", "ai", "lr", "x0.25"]
    (cmd,) = commands(run_dir)
    assert (cmd["source"], cmd["multiplier"]) == ("human", 0.25)


def test_a_proposal_made_again_is_listed_once(run_dir: Path, capsys) -> None:
    queue_item(run_dir, item_id="d1000-a")
    queue_item(run_dir, step=1110, item_id="d1110-b")
    _, out, _ = run(capsys, "--dir", run_dir, "review", "list")
    (row,) = out.splitlines()[1:]
    assert "lr x0.5 (proposed 2 times)" in row
    _, out, _ = run(capsys, "--dir", run_dir, "review", "show", "d1110-b")
    assert out.startswith("proposal d1000-a  pending (expires after step 1610)\n")
    assert "proposed again at steps 1110 (d1110-b)" in out
