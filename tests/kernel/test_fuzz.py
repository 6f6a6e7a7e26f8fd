"""Thousands of random lines thrown at a live kernel: it never fails the training loop, answers
every line with exactly one ledger row, and keeps every knob within its bounds."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import Command, Kernel, KernelSettings, LedgerRow, read_kernel_state, read_ledger
from kernel.jsonl import append_line

SETTINGS = KernelSettings(poll_interval_s=0.0, flush_interval_s=3600.0, heartbeat_interval_s=3600.0)
SOURCES = ["human", "rules", "ai", "tune", "replay", "api"]
OPS = ["set", "stop", "resume", "checkpoint"]  # a pause would block this single-threaded test
KNOBS = ["lr", "weight_decay", "momentum", "grad_clip", "loss.aux", "loss.extra", "nope", "lr[0]"]

# -- strategies ----------------------------------------------------------------------

# characters that broke line-based readers; a lone surrogate travels as a \\ud800 escape
TRICKY = ["\ud800", "\udfff", "\u2028", "\u2029", "\x85", "\x00", "\x1c", "é", "😀"]
text = st.text(max_size=12) | st.lists(st.sampled_from(TRICKY), max_size=3).map("".join)
numbers = st.one_of(
    st.floats(),  # NaN, infinities, subnormals, huge
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, -0.0, 1e-7, 10.0, 1e308, -1e308, 5e-324, 2**63, 10**400]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
FIELDS = {
    "id": st.one_of(st.sampled_from(["a", "b", "c"]), text, json_values),
    "source": st.one_of(st.sampled_from(SOURCES), json_values),
    "op": st.one_of(st.sampled_from(OPS), json_values),
    "knob": st.one_of(st.sampled_from(KNOBS), json_values),
    "value": st.one_of(numbers, st.booleans(), st.lists(numbers, max_size=3), json_values),
    "multiplier": st.one_of(numbers, json_values),
    "apply_at_step": st.one_of(st.integers(-3, 60), numbers, json_values),
    "reason": st.one_of(text, json_values),
    "proposal_id": st.one_of(text, json_values),
    "created_at": numbers,
    "extra": json_values,
}
random_dicts = st.fixed_dictionaries({}, optional=FIELDS)
valid_commands = (
    st.builds(
        Command,
        id=st.text(st.characters(codec="ascii"), min_size=1, max_size=6),
        source=st.sampled_from(SOURCES),
        knob=st.sampled_from(KNOBS),
        value=st.one_of(
            st.floats(-1.0, 20.0), st.booleans(), st.lists(st.floats(0, 1), min_size=1, max_size=2)
        ),
        apply_at_step=st.one_of(st.none(), st.integers(0, 60)),
        reason=st.one_of(st.none(), st.text(max_size=12)),
    )
    | st.builds(
        Command,
        id=st.uuids().map(str),
        source=st.sampled_from(SOURCES),
        knob=st.sampled_from(KNOBS),
        multiplier=st.floats(1e-3, 1e3),
        apply_at_step=st.one_of(st.none(), st.integers(0, 60)),
    )
    | st.builds(
        Command,
        id=st.uuids().map(str),
        source=st.sampled_from(SOURCES),
        op=st.sampled_from(OPS[1:]),
        apply_at_step=st.one_of(st.none(), st.integers(0, 60)),
    )
)


def _dumps(obj: object, ascii_only: bool) -> str:
    text = json.dumps(obj, ensure_ascii=ascii_only)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate can only travel escaped
        text = json.dumps(obj)
    return text


valid_lines = valid_commands.map(lambda c: c.model_dump_json(exclude_none=True))
lines = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=40),
    st.builds(_dumps, json_values, st.booleans()),
    st.builds(_dumps, random_dicts, st.booleans()),
    st.builds(_dumps, random_dicts, st.booleans()),
    valid_lines,
    valid_lines,
)
batches = st.lists(
    st.tuples(st.lists(lines, max_size=12), st.integers(0, 4)), min_size=2, max_size=10
)

# -- checks --------------------------------------------------------------------------


class _Errors(logging.Handler):
    """Collects what the kernel logs at ERROR: a ``kernel.step`` that swallowed an exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _pauses(line: str) -> bool:
    try:
        raw = json.loads(line)
    except ValueError:
        return False
    return isinstance(raw, dict) and raw.get("op") == "pause"


def _assert_within_bounds(kernel: Kernel) -> None:
    for knob in kernel.knobs.values():
        value = knob.get()
        if knob.kind == "bool":
            assert isinstance(value, bool), knob.name
            continue
        for v in value if isinstance(value, list) else [value]:
            assert isinstance(v, float) and math.isfinite(v), (knob.name, v)
            assert knob.lo is not None and knob.hi is not None, knob.name
            assert knob.lo <= v <= knob.hi, (knob.name, v)


def _assert_rows_are_complete(rows: list[LedgerRow]) -> None:
    for row in rows:
        if row.decision == "rejected":
            assert row.reason, row
        if row.decision == "failed":
            assert row.error, row
        if row.decision == "applied" and row.op == "set":
            assert row.before is not None and row.after is not None, row


# -- the fuzz test -------------------------------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=batches)
def test_a_live_kernel_survives_random_lines(batches):
    run_dir = Path(tempfile.mkdtemp(prefix="fuzz-"))
    errors = _Errors()
    logging.getLogger("kernel").addHandler(errors)
    try:
        _fuzz(run_dir, batches)
        assert errors.records == [], [r.getMessage() for r in errors.records]
    finally:
        logging.getLogger("kernel").removeHandler(errors)
        shutil.rmtree(run_dir, ignore_errors=True)


def _fuzz(run_dir: Path, batches: list[tuple[list[str], int]]) -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights = {"aux": 0.5, "extra": True}
    saved: list[int] = []
    kernel = Kernel(
        run_dir,
        optimizer=opt,
        loss_weights=weights,
        grad_clip=1.0,
        save_fn=saved.append,
        settings=SETTINGS,
    )
    offsets: set[int] = set()
    step = 0
    for batch, advance in batches:
        for line in batch:
            if _pauses(line):
                continue
            offsets.add(append_line(run_dir / "commands.jsonl", line))  # blank ones too
        step += advance
        kernel.step(step)
        _assert_within_bounds(kernel)
    kernel.step(10**9)  # every pending command with a reasonable step is due now
    kernel.close()

    rows = read_ledger(run_dir)
    ledger = run_dir / "applied.jsonl"
    assert len(rows) == (ledger.read_bytes().count(b"\n") if ledger.exists() else 0)
    state = read_kernel_state(run_dir)
    assert state is not None
    answered = [r.offset for r in rows]
    assert len(answered) == len(set(answered))  # one row per line
    waiting = offsets - set(answered)  # the lines still waiting for their step
    assert set(answered) <= offsets and state.pending_count == len(waiting)
    assert {p.offset for p in state.pending} <= waiting
    assert all((p.command.apply_at_step or 0) > 10**9 for p in state.pending)
    _assert_rows_are_complete(rows)
    _assert_within_bounds(kernel)


# -- what the fuzzing found ----------------------------------------------------------


def test_a_line_with_a_lone_surrogate_id_is_answered(tmp_path):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    kernel = Kernel(tmp_path, optimizer=opt, settings=SETTINGS)
    path = tmp_path / "commands.jsonl"
    offsets = [
        append_line(path, '{"id": "x\\ud800", "source": "human", "knob": "lr", "value": 0.2}'),
        append_line(path, '{"id": "next", "source": "human", "knob": "lr", "value": 0.3}'),
    ]
    kernel.step(0)
    kernel.step(1)
    rows = read_ledger(tmp_path)
    assert [r.offset for r in rows] == offsets
    assert rows[0].decision in ("rejected", "failed") and rows[1].decision == "applied"
    assert opt.param_groups[0]["lr"] == 0.3
