"""The analyst and the planner end to end against a real model behind the stock llama.cpp
server: real HTTP, the provider's refusal of ``json_schema`` and the fall back to its
grammar-constrained JSON mode, real latency and real token usage.

SmolLM2-135M's judgement is poor; what is checked is the path, not the advice: every LLM
call ends in valid structured output or a recorded fallback, every call is charged, none
runs past ``llm.timeout_s``, and the decisions reach the review queue (``ai_suggest``) or the
kernel (``ai_auto``). The figures are printed (``make test-real-llm`` shows them).
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from _llama import LlamaServer

from autopilot.budget import SPEND_FILE, SpendEntry
from autopilot.config import Settings
from autopilot.decisions import DecisionLog, DecisionRecord
from autopilot.llm import LLMClient
from autopilot.policies.llm import LLMPolicy
from autopilot.review import ReviewQueue
from autopilot.watch import Autopilot
from kernel import Kernel, KernelSettings, read_ledger
from kernel.jsonl import read_models

MODEL = "smollm2-135m-instruct"
KEY_ENV = "AUTOPILOT_REAL_LLM_KEY"
TIMEOUT_S = 240.0
"""Per call. One thread does ~95 prompt and ~50 generated tokens/s alone; a busy shared
machine is slower, and a slow call must become a recorded fallback, not a hang."""
LR, BUG_LR, BUG_STEP = 0.05, 0.5, 150
MAX_DECISIONS = 6
"""Decisions to wait for a routed one: a 135M model may call a divergent run healthy."""
FAST = KernelSettings(
    poll_interval_s=0.0, flush_interval_s=0.0, heartbeat_interval_s=0.0, pause_poll_s=0.002
)


@dataclass
class TimedTransport(httpx.HTTPTransport):
    """A real transport that records how long each request took, body included."""

    seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.monotonic()
        response = super().handle_request(request)
        response.read()
        self.seconds.append(time.monotonic() - start)
        return response


class Training:
    """A small SGD run under a real ``Kernel``: healthy until a buggy schedule sets
    ``BUG_LR``, then five times worse while lr stays above 0.2."""

    def __init__(self, run_dir: Path) -> None:
        self.param = torch.nn.Parameter(torch.ones(4))
        self.opt = torch.optim.SGD([self.param], lr=LR, momentum=0.9, weight_decay=1e-4)
        self.kernel = Kernel(run_dir, optimizer=self.opt, key_metric="val/loss", settings=FAST)
        self.step = 0
        self._rng = random.Random(0)

    def train(self, steps: int, pilot: Autopilot | None) -> None:
        """``steps`` steps; ``pilot`` (if any) ticks after every 10th."""
        for _ in range(steps):
            self.step += 1
            if self.step == BUG_STEP:
                for group in self.opt.param_groups:
                    group["lr"] = BUG_LR
            self.param.pow(2).sum().backward()
            self.opt.step()
            self.opt.zero_grad()
            lr = self.opt.param_groups[0]["lr"]
            level = (0.5 + 2.0 * math.exp(-self.step / 150)) * (5.0 if lr > 0.2 else 1.0)
            noise = 1 + 0.03 * self._rng.gauss(0, 1)
            metrics = {"train/loss": level * noise, "lr": lr, "grad_norm": 3 * level * noise}
            metrics.update({f"train/loss_{n}": level * noise / 3 for n in ("ce", "aux", "reg")})
            if self.step % 10 == 0:
                metrics["val/loss"] = 1.1 * level * (1 + 0.01 * self._rng.gauss(0, 1))
                metrics.update({f"val/{n}": 1 / (1 + level) for n in ("acc", "f1", "auc")})
            self.kernel.log(self.step, metrics)
            self.kernel.step(self.step)
            if pilot is not None and self.step % 10 == 0:
                pilot.tick()
                # lock-step, as the replay runs: a call this tick started is answered before
                # the next tick (live, it runs beside training), so the tier is repeatable
                pilot.context.llm_calls.wait(TIMEOUT_S + 5)


def settings_for(llama: LlamaServer, mode: str, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "mode": mode,
            "llm": {
                "base_url": llama.base_url,
                "model": MODEL,
                "api_key_env": KEY_ENV,
                "timeout_s": TIMEOUT_S,
                "max_retries": 0,
                "max_output_tokens": 300,
            },
            # the server is free; a nominal price makes every charge visible in the ledger
            "prices": {MODEL: {"input": 1.0, "output": 2.0}},
            "budget": {
                "day_ledger": str(tmp_path / "day-spend.jsonl"),
                "min_steps_between_calls": 0,
            },
            "cadence": {"repeat_after_steps": 20},
        }
    )


def run_autopilot(
    llama: LlamaServer, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[DecisionRecord], TimedTransport, float]:
    """Train into the divergence under ``mode`` until a decision is routed (or
    ``MAX_DECISIONS`` were made); the run directory, decisions, timings and wall time."""
    monkeypatch.setenv(KEY_ENV, "local")
    run_dir = tmp_path / "run"
    settings = settings_for(llama, mode, tmp_path)
    transport = TimedTransport()
    client = LLMClient(settings.llm, "local", http_client=httpx.Client(transport=transport))
    policy = LLMPolicy(settings, run_dir, client=client)
    run = Training(run_dir)
    start = time.monotonic()
    with Autopilot(run_dir, mode=mode, settings=settings, llm_policy=policy) as pilot:
        run.train(BUG_STEP, pilot)
        # the divergence is urgent: the rules answer it at once, and the LLM's answer follows
        while not (_routed(run_dir) and _answered(run_dir)):
            if len(_decisions(run_dir)) >= MAX_DECISIONS:
                break
            run.train(10, pilot)
            assert run.step < BUG_STEP + 2000, "no decision after 2000 steps of divergence"
        while pilot.context.llm_calls.busy():  # the last call's answer is judged, not left
            run.train(10, pilot)
            assert run.step < BUG_STEP + 2500, "an LLM call was never taken"
    run.train(5, None)  # the kernel reads the commands sent at its next steps
    run.kernel.close()
    return run_dir, _decisions(run_dir), transport, time.monotonic() - start


def _decisions(run_dir: Path) -> list[DecisionRecord]:
    return [view.record for view in DecisionLog(run_dir).read()]


def _answered(run_dir: Path) -> bool:
    """Whether an LLM answer was taken (judged, or recorded as stale)."""
    return any(r.proposer == "ai" for r in _decisions(run_dir))


def _routed(run_dir: Path) -> bool:
    return any(r.route != "none" for r in _decisions(run_dir))


def check_every_call(run_dir: Path, records: list[DecisionRecord], transport: TimedTransport):
    """Valid output or a recorded fallback per decision; every call charged and in time."""
    assert records, "the divergence was never decided"
    for record in records:
        assert record.proposer == "ai" or record.fallback_reason, record
    assert any(r.proposer == "ai" for r in records), "no call gave valid structured output"
    assert not [r for r in records if "cannot reach" in (r.fallback_reason or "")]
    charges = [e for e in read_models(run_dir / "autopilot" / SPEND_FILE, SpendEntry)]
    charged = [e for e in charges if e.type == "charge"]
    assert len(charged) == len([e for e in charges if e.type == "reserve"])  # none left held
    assert all(e.tokens_in > 0 for e in charged) and sum(e.usd for e in charged) > 0
    assert sum(r.usage.tokens_in for r in records) == sum(e.tokens_in for e in charged)
    assert transport.seconds and max(transport.seconds) <= TIMEOUT_S + 5
    return charged


_SPEED = re.compile(r"(prompt eval|\seval) time = .*?([\d.]+) tokens per second")
"""llama.cpp's own timing lines in the server log (a figure for the README, not a check)."""


def server_speeds(log: Path) -> dict[str, float]:
    """Median prompt and generation tokens per second over the server's calls so far."""
    found: dict[str, list[float]] = {"prompt": [], "generation": []}
    for kind, rate in _SPEED.findall(log.read_text(errors="replace")):
        found["prompt" if kind == "prompt eval" else "generation"].append(float(rate))
    return {k: round(statistics.median(v), 1) for k, v in found.items() if v}


def _answer(record: DecisionRecord) -> str:
    """What one decision proposed and what the guards made of it, in a line."""
    if record.proposal is None:
        return f"step {record.step}: no proposal"
    actions = ", ".join(a.describe() for a in record.proposal.actions) or "no action"
    verdicts = ", ".join(f"{v.status} ({v.rule})" for v in record.verdicts) or "-"
    return (
        f"step {record.step}: {record.proposer} {record.proposal.kind}: {actions} "
        f"(confidence {record.proposal.confidence:g}) -> {verdicts} -> {record.route}"
    )


def report(mode: str, records, charged, transport: TimedTransport, wall_s: float, log: Path):
    figures: dict[str, Any] = {
        "mode": mode,
        "decisions": len(records),
        "llm_decisions": sum(r.proposer == "ai" for r in records),
        "fallbacks": [r.fallback_reason for r in records if r.fallback_reason],
        "http_requests": len(transport.seconds),
        "latency_s": [round(s, 1) for s in transport.seconds],
        "calls": [f"{e.purpose}: {e.tokens_in} in / {e.tokens_out} out" for e in charged],
        "tokens_in": sum(e.tokens_in for e in charged),
        "tokens_out": sum(e.tokens_out for e in charged),
        "tokens_per_s": server_speeds(log),
        "notes": [r.note for r in records if r.note],
        "answers": [_answer(r) for r in records],
        "wall_s": round(wall_s, 1),
    }
    print(f"\nreal_llm {mode}: {json.dumps(figures, indent=1)}")
    return figures


def test_ai_suggest_fills_the_review_queue_through_the_real_server(llama, tmp_path, monkeypatch):
    run_dir, records, transport, wall_s = run_autopilot(llama, "ai_suggest", tmp_path, monkeypatch)
    charged = check_every_call(run_dir, records, transport)
    report("ai_suggest", records, charged, transport, wall_s, llama.log)
    items = ReviewQueue(run_dir, settings_for(llama, "ai_suggest", tmp_path)).items()
    assert items and {r.proposal_id for r in records if r.route == "review"} == {
        item.id for item in items
    }
    assert not [r for r in read_ledger(run_dir) if r.knob]  # nothing applied without review
    # llama-cpp-python refuses json_schema: the first decision says so, once
    said = [f"{r.note}{r.fallback_reason}" for r in records]
    said = [text for text in said if "refused response_format" in text]
    assert len(said) == 1 and "using json_object+schema" in said[0]


def test_ai_auto_sends_commands_through_the_real_server(llama, tmp_path, monkeypatch):
    run_dir, records, transport, wall_s = run_autopilot(llama, "ai_auto", tmp_path, monkeypatch)
    charged = check_every_call(run_dir, records, transport)
    report("ai_auto", records, charged, transport, wall_s, llama.log)
    sent = [c for r in records for c in r.command_ids]
    assert sent, "no decision sent a command"
    handled = {row.command_id for row in read_ledger(run_dir)}
    assert set(sent) <= handled  # the kernel handled every command sent (applied or refused)
