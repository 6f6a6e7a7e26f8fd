"""``autopilot doctor``: what would stop the autopilot deciding well, found before its first
decision rather than after.

Each check says ``ok``, ``warn`` (the autopilot runs, but less than asked: the AI modes fall
back to the rules, a key metric is guessed) or ``fail`` (it cannot do what the config asks),
with what to do about it:

- ``config``: which files set what, and what a run directory's file may not set;
- ``run``: the run directory, its kernel's heartbeat and status;
- ``key metric``: the metric decisions are judged by, declared and logged;
- ``memory``: the store opens, and what it knows of this run's task;
- ``llm``: a key, a price, and one real call to the provider (its latency, tokens and cost;
  the call is not charged to any run's budget). ``--no-call`` skips the call.

Nothing here writes to the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from autopilot.budget import cost_usd
from autopilot.config import AI_MODES, LoadedSettings, Settings
from autopilot.context import declared_key_metric, key_metric_note, key_metric_of
from kernel import KernelError, KernelState, read_kernel_state

Status = Literal["ok", "warn", "fail"]
STALE_S = 60.0
"""A running kernel whose heartbeat is older than this is reported (it beats every few s)."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One finding: what was checked, how it went, and what to do."""

    name: str
    status: Status
    detail: str


class _Ping(BaseModel):
    """The one-field reply the doctor's call asks for."""

    ok: bool


def run_checks(
    run_dir: Path | None,
    loaded: LoadedSettings,
    *,
    call_llm: bool = True,
    http_client: Any = None,
) -> list[Check]:
    """Every check, in order (a check that raises is a ``fail`` with its error)."""
    settings = loaded.settings
    kernel: KernelState | None = None
    checks = [_config(loaded)]
    run_check, kernel = _run(run_dir)
    checks.append(run_check)
    steps: list[Callable[[], Check]] = [
        lambda: _key_metric(run_dir, kernel, settings),
        lambda: _memory(run_dir, kernel, settings),
        lambda: _llm(settings, call_llm=call_llm, http_client=http_client),
    ]
    for step in steps:
        try:
            checks.append(step())
        except Exception as exc:  # a bug in a check must not hide the others
            checks.append(
                Check(name="doctor", status="fail", detail=f"{type(exc).__name__}: {exc}")
            )
    return checks


def _config(loaded: LoadedSettings) -> Check:
    lines = loaded.describe()
    status: Status = "warn" if loaded.ignored else "ok"
    detail = "; ".join(lines) + f"; mode {loaded.settings.mode}"
    return Check(name="config", status=status, detail=detail)


def _run(run_dir: Path | None) -> tuple[Check, KernelState | None]:
    if run_dir is None:
        return Check(
            name="run",
            status="warn",
            detail="no run directory (--dir or $AUTOPILOT_DIR): the config, memory and the "
            "LLM are checked, not a run",
        ), None
    if not run_dir.is_dir():
        return Check(
            name="run",
            status="fail",
            detail=f"{run_dir} does not exist: start the training with Kernel({str(run_dir)!r}) "
            "first, or pass the directory it writes",
        ), None
    try:
        kernel = read_kernel_state(run_dir)
    except KernelError as exc:
        return Check(name="run", status="fail", detail=str(exc)), None
    if kernel is None:
        return Check(
            name="run",
            status="warn",
            detail=f"{run_dir}: no kernel.json yet; the training has not started a Kernel here",
        ), None
    age = kernel.heartbeat_age()
    where = (
        f"{run_dir}: {kernel.status}, step {kernel.last_step}, pid {kernel.pid} on {kernel.host}"
    )
    if kernel.has_ended():
        return Check(name="run", status="warn", detail=f"{where}; the run has ended"), kernel
    if age > STALE_S:
        detail = f"{where}; no heartbeat for {age:.0f} s: is the training stuck?"
        return Check(name="run", status="warn", detail=detail), kernel
    return Check(name="run", status="ok", detail=f"{where}; heartbeat {age:.1f} s ago"), kernel


def _key_metric(run_dir: Path | None, kernel: KernelState | None, settings: Settings) -> Check:
    names, step = _logged(run_dir)
    declared = declared_key_metric(kernel, settings)
    if not names:
        said = f"{declared!r} declared" if declared else "none declared"
        return Check(name="key metric", status="warn", detail=f"{said}; nothing logged yet")
    key = key_metric_of(kernel, settings, names, step)
    grace = settings.detectors.model_copy(update={"key_metric_grace_steps": 0})
    note = key_metric_note(kernel, settings.model_copy(update={"detectors": grace}), names, step)
    if key is None:
        return Check(name="key metric", status="fail", detail=note or "no key metric")
    if note:
        return Check(name="key metric", status="warn", detail=note)
    return Check(
        name="key metric",
        status="ok",
        detail=f"{key.name} ({key.mode}), logged by step {step} among {len(names)} metrics",
    )


def _logged(run_dir: Path | None) -> tuple[set[str], int]:
    """The metric names in the last part of the run's metrics and its last step."""
    if run_dir is None or not (run_dir / "metrics.jsonl").exists():
        return set(), 0
    from autopilot import observe

    records, _, _ = observe.read_metrics(run_dir, observe.start_offset(run_dir), None)
    names = {name for r in records for name in r.metrics}
    return names, records[-1].step if records else 0


def _memory(run_dir: Path | None, kernel: KernelState | None, settings: Settings) -> Check:
    from autopilot.remember import RunMemory

    memory = RunMemory(run_dir or Path.cwd(), settings)
    try:
        if kernel is not None:
            memory.peek(kernel)
        else:
            memory.open_check()
        line = memory.status()
    finally:
        memory.close()
    if memory.off_reason is not None:
        status: Status = "warn" if not settings.memory.enabled else "fail"
        return Check(name="memory", status=status, detail=memory.off_reason)
    return Check(name="memory", status="ok", detail=line.removeprefix("memory: "))


def _llm(settings: Settings, *, call_llm: bool, http_client: Any) -> Check:
    llm = settings.llm
    model = f"{llm.model} at {llm.base_url or '$OPENAI_BASE_URL or api.openai.com'}"
    ai = settings.mode in AI_MODES
    key = settings.api_key()
    if key is None:
        detail = (
            f"no key in ${llm.api_key_env}: the AI modes fall back to the rules (set it, or "
            "[llm] api_key_env to the variable that holds it)"
        )
        return Check(name="llm", status="warn" if ai else "ok", detail=detail)
    price = settings.price(llm.model)
    if price is None:
        return Check(
            name="llm",
            status="fail",
            detail=f"{llm.model} has no price, so it is never called (the budget could not be "
            f'kept): add [prices."{llm.model}"] input/output (USD per 1M tokens; 0 for a '
            "local model)",
        )
    if not call_llm:
        return Check(name="llm", status="ok", detail=f"{model}: key and price set; not called")
    from autopilot.llm import LLMClient, LLMError

    client = LLMClient(llm, key, http_client=http_client)
    messages = [
        {"role": "system", "content": 'Reply with the JSON object {"ok": true} and nothing else.'},
        {"role": "user", "content": "ping"},
    ]
    started = time.monotonic()
    try:
        reply = client.structured(messages, _Ping, max_tokens=20)
    except LLMError as exc:
        took = time.monotonic() - started
        return Check(
            name="llm",
            status="fail",
            detail=f"{model}: {exc.kind} after {took:.1f} s: {exc}; the AI modes would fall "
            "back to the rules",
        )
    took = time.monotonic() - started
    usage = reply.usage
    usd = cost_usd(price, usage.tokens_in, usage.tokens_out, usage.cached_in)
    return Check(
        name="llm",
        status="ok",
        detail=f"{model}: answered in {took:.2f} s ({client.response_format}), "
        f"{usage.tokens_in} tokens in, {usage.tokens_out} out, ${usd:.6f} (not charged to a run)",
    )


__all__ = ["Check", "Status", "run_checks"]
