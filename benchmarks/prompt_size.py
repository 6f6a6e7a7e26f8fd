"""Prompt size: input tokens per LLM decision on a 20-metric run, against raw values.

A synthetic run logs 20 metrics for ``--steps`` steps. The autopilot's own code reads it
back (``read_metrics``, ``fold_records``, ``summarize``, ``render_table``) and the LLM policy
renders the requests exactly as it sends them (``analyst_request``, ``planner_request``):
the messages, and the JSON schema of the reply, which providers that honour
``response_format=json_schema`` bill as input too. The context is a typical decision's: a
plateau alert, the run's knobs from ``kernel.json``, three earlier decisions with their
measured effects, and more lessons from memory than ``memory.prompt_tokens`` holds, so the
memory section is filled to its budget. Tokens are counted offline with ``autopilot.tokens``
(cl100k, a close estimate for other tokenizers). The target: a whole decision, both calls
with their schemas and a full memory section, within ``TARGET_TOKENS``.

The alternative is to send the last 200 raw values of every metric, as compact text (one
line per metric, 4 significant digits) or as JSON. The ratio divides those raw values alone
by the whole decision (both calls, schemas included); a raw-values prompt would also carry
instructions, alerts and knobs, so the ratio understates the saving.

Run: ``.venv/bin/python benchmarks/prompt_size.py [--steps 15000] [--show]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _synthetic_run import write_run

from autopilot.config import Settings
from autopilot.context import knobs_with_bounds
from autopilot.diagnoses import Diagnosis
from autopilot.llm import AnalystOutput
from autopilot.observe import fold_records, read_metrics
from autopilot.policies._base import PastDecision, PolicyContext
from autopilot.policies._prompt_fields import memory_section
from autopilot.policies.llm import LLMPolicy, Request
from autopilot.summary import RunSummary, render_table, summarize
from autopilot.tokens import count_message_tokens, count_tokens
from kernel import LedgerRow, MetricRecord, format_value, read_kernel_state

KEY = "val/loss"
RAW_POINTS = 200
TARGET_TOKENS = 1000
TARGET_RATIO = 10.0
MEMORY = "\n".join(
    [
        "plateau lr x0.5: 3 runs of this task, 3 better, median +6% vs projection",
        "plateau weight_decay x2: 2 runs of this task, 2 worse, median -4% vs projection",
        "overfitting weight_decay x2: 4 runs of this task, 3 better, median +5% vs projection",
        "divergence grad_clip =1: 2 runs of this task, 2 better, median +12% vs projection",
        "plateau rewind best: 1 run of this task, 1 neutral, median +0% vs projection",
        "weak (1 observation): oscillation lr x0.3: 1 run, 1 better, +9% vs projection",
        "weak (1 observation): plateau lr x2: 1 run, 1 worse, -7% vs projection",
        "weak (1 observation): imbalance loss.aux x0.5: 1 run, 1 better, +3% vs projection",
    ]
)
"""Lessons as memory ranks them, more than ``memory.prompt_tokens`` holds: the prompt gets
the first lines that fit, so the memory section is filled to its budget."""
PAST = [
    # steps before now, knob, before, after, source, measured effect
    (3000, "lr", 3e-3, 2e-3, "rules", "val/loss +4% vs projection (better)"),
    (2000, "lr", 2e-3, 1e-3, "ai", "val/loss +1% vs projection (neutral)"),
    (1000, "weight_decay", 0.02, 0.01, "ai", "val/loss -3% vs projection (worse), rolled back"),
]


def read_run(run_dir: Path, settings: Settings) -> tuple[list[MetricRecord], RunSummary]:
    """The run's records and its summary, read the way the autopilot reads them."""
    records, _, _ = read_metrics(run_dir, 0)
    windows, best = fold_records({}, {}, records, settings.detectors.window)
    summary = summarize(
        windows,
        best,
        step=records[-1].step,
        key_metric=KEY,
        key_mode="min",
        min_points=settings.detectors.min_points,
    )
    return records, summary


def context(run_dir: Path, settings: Settings, summary: RunSummary) -> PolicyContext:
    """A plateau alert, the run's knobs, three earlier decisions with effects, memory."""
    step, key = summary.step, summary.metrics[KEY]
    changes, past = [], []
    for seq, (ago, knob, before, after, source, effect) in enumerate(PAST, 1):
        decided = step - ago
        changes.append(_applied(seq, decided, knob, before, after, source))
        past.append(
            PastDecision(
                step=decided,
                diagnosis=_plateau(decided, key.best or 0.0, decided - 400).message,
                actions=[f"{knob}={format_value(after)} (kernel)"],
                effect=effect,
                decision_id=f"d{decided}",
            )
        )
    return PolicyContext(
        step=step,
        mode="ai_auto",
        key_metric=KEY,
        key_mode="min",
        diagnoses=[_plateau(step, key.best or 0.0, key.best_step or 0)],
        knobs=knobs_with_bounds(read_kernel_state(run_dir), settings),
        summary_table=render_table(summary),
        recent_changes=changes,
        past_decisions=past,
        memory_notes=MEMORY,
    )


def analysis(summary: RunSummary) -> AnalystOutput:
    """A typical analyst answer on this run, which the planner reads."""
    key = summary.metrics[KEY]
    return AnalystOutput(
        kind="plateau",
        metric=KEY,
        summary=f"{KEY} has stalled near {key.last:.3g} while train/loss barely moves; the "
        "last lr cut helped little.",
        evidence=[
            f"{KEY} best {key.best:.3g} at step {key.best_step}, {key.steps_since_best} steps ago",
            f"{KEY} slope {100 * (key.slope or 0):.1f}% per 100 steps",
            "lr 0.002 -> 0.001 gave +1% vs projection",
        ],
        confidence=0.8,
    )


def _plateau(step: int, best: float, best_step: int) -> Diagnosis:
    """A plateau alert worded as the plateau detector words it."""
    return Diagnosis(
        kind="plateau",
        metric=KEY,
        step=step,
        message=f"{KEY} has not improved for {step - best_step} steps (best {best:.3g} at step "
        f"{best_step}); its trend projects -0.31% per 400 steps, below the 1.00% that counts "
        "as progress",
    )


def _applied(
    seq: int, decided: int, knob: str, before: float, after: float, source: str
) -> LedgerRow:
    """The ledger row of a decision's change, applied at the next safe point."""
    return LedgerRow(
        seq=seq,
        step=decided + 1,
        wall_time=0.0,
        decision="applied",
        command_id=f"{source}-d{decided}-0",
        source=source,
        op="set",
        knob=knob,
        before=before,
        after=after,
        proposal_id=f"d{decided}",
    )


def raw_values(records: list[MetricRecord]) -> dict[str, list[float]]:
    """The last ``RAW_POINTS`` values of every metric, to 4 significant digits."""
    names = sorted({name for r in records for name in r.metrics})
    tail = records[-RAW_POINTS:]
    return {n: [float(f"{r.metrics[n]:.4g}") for r in tail if n in r.metrics] for n in names}


def raw_text(values: dict[str, list[float]]) -> str:
    return "\n".join(f"{name}: {','.join(f'{v:.4g}' for v in vs)}" for name, vs in values.items())


def measure(requests: Sequence[Request[Any]]) -> list[tuple[str, int, int]]:
    """Per request: its prompt id, its messages' tokens, its schema's tokens."""
    return [
        (r.prompt_id, count_message_tokens(r.messages), count_tokens(r.schema_text))
        for r in requests
    ]


def report(
    rows: list[tuple[str, int, int]],
    table: int,
    memory: tuple[int, int],
    values: dict[str, list[float]],
) -> None:
    print(f"{len(values)}-metric run; the summary table alone: {table} tokens; the memory")
    print(f"section {memory[0]} tokens (budget memory.prompt_tokens = {memory[1]})\n")
    print(f"{'call':<14} {'messages':>8} {'schema':>6} {'total':>6}")
    for prompt_id, msgs, schema in rows:
        print(f"{prompt_id:<14} {msgs:>8} {schema:>6} {msgs + schema:>6}")
    msgs = sum(r[1] for r in rows)
    total = msgs + sum(r[2] for r in rows)
    print(f"{'per decision':<14} {msgs:>8} {total - msgs:>6} {total:>6}")
    for label, tokens in (("messages", msgs), ("with schemas", total)):
        verdict = "meets" if tokens <= TARGET_TOKENS else "misses"
        print(f"target <= {TARGET_TOKENS} tokens, {label}: {tokens} ({verdict})")
    print(f"\nraw alternative: the last {RAW_POINTS} values of every metric, 4 significant digits")
    compact = json.dumps(values, separators=(",", ":"))
    for label, text in (("text, a line per metric", raw_text(values)), ("JSON", compact)):
        raw = count_tokens(text)
        verdict = "meets" if raw / total >= TARGET_RATIO else "misses"
        print(
            f"  {label:<24} {raw:>6} tokens: x{raw / total:.1f} a whole decision "
            f"(x{raw / msgs:.1f} its messages; x{raw / table:.0f} the table); "
            f"target x{TARGET_RATIO:g} ({verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--show", action="store_true", help="print the requests too")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        write_run(run_dir, args.steps)
        records, summary = read_run(run_dir, settings)
        ctx = context(run_dir, settings, summary)
        policy = LLMPolicy(settings, run_dir)
        requests: list[Request[Any]] = [
            policy.analyst_request(ctx),
            policy.planner_request(ctx, analysis(summary)),
        ]
    if args.show:
        for r in requests:
            for m in r.messages:
                print(f"--- {r.prompt_id} {m['role']} ---\n{m['content']}")
            print(f"--- {r.prompt_id} response_format ---\n{r.schema_text}\n")
    budget = settings.memory.prompt_tokens
    memory = (count_tokens(memory_section(ctx.memory_notes, budget)), budget)
    report(measure(requests), count_tokens(ctx.summary_table), memory, raw_values(records))


if __name__ == "__main__":
    main()
