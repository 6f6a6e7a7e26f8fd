"""The metrics API's cached columns and bulk parse give the page a straightforward reader
gives: every line validated by ``MetricRecord``, from the segment's start, every time."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from autopilot.service import metric_lines
from autopilot.service.lttb import lttb
from autopilot.service.metric_columns import ColumnCache
from autopilot.service.models import MetricsPage, Series
from autopilot.service.views import metrics_page
from kernel import MetricRecord
from kernel.jsonl import JsonlTail
from kernel.metrics import METRICS_FILE
from kernel.state import KernelState, write_kernel_state

NAMES = ["train/loss", "lr", "grad/norm"]
GARBAGE = [
    "not json",
    '{"step": "x", "metrics": {"train/loss": 1}}',
    '{"metrics": {"train/loss": 1}}',
    '{"step": 5, "metrics": {"train/loss": true}}',
    '{"step": 5, "metrics": {"train/loss": "1.5"}}',
    '{"step": 5, "metrics": {"train/loss": "nan"}}',
    '{"step": 5, "metrics": {"train/loss": NaN, "lr": Infinity}}',
    '{"step": 5, "metrics": {"train/loss": 1e400}}',
    '{"step": 5, "metrics": {"train/loss": "x", "train/loss": 1.0}}',
    '{"step": 5, "metrics": {"train/loss": 1.0, "train/loss": 2.0}}',
    '{"step": 5, "metrics": {"a:b": 1.0}}',
    '{"step": 5, "metrics": {"train/loss": null}}',
    '{"step": 5, "metrics": {"train/loss": 99999999999999999999}}',
    '{"step": 5.0, "metrics": {"lr": 3}}',
    '{"step": 5, "extra": {"deep": [1, 2]}, "metrics": {"lr": 0.5}}',
    '{"step": 5, "nonfinite": "lr", "metrics": {"lr": 0.5}}',
    '{"step": 5, "segment": null, "metrics": {"lr": 0.5}}',
    '{"step": 5, "metrics": {}}',
    '{"step": 5} trailing',
    "[1, 2]",
    '{"step": 5, "metrics": {"lr": 0.5}},{"step": 6, "metrics": {"lr": 0.5}}',
]


def reference_page(
    path: Path, offset: int, names: list[str] | None, max_points: int
) -> MetricsPage:
    """The metrics route as it was before the cache: one ``MetricRecord`` a line."""
    found = path / "kernel.json"
    state = json.loads(found.read_text()) if found.exists() else None
    start = offset or (state["metrics_start"] if state else 0)
    segment = state["segment"] if state else None
    tail = JsonlTail(path / METRICS_FILE, offset=start)
    columns: dict[str, tuple[list[int], list[float]]] = {}
    rewinds = []
    for _, text in tail.read_new():
        try:
            record = MetricRecord.model_validate_json(text)
        except ValidationError:
            continue
        if segment is not None and record.segment != segment:
            continue
        if record.rewound_to is not None:
            rewinds.append((record.step, record.rewound_to))
        for name, value in record.metrics.items():
            if names is None or name in names:
                column = columns.setdefault(name, ([], []))
                column[0].append(record.step)
                column[1].append(value)
    series = {name: _series(s, v, max_points) for name, (s, v) in columns.items()}
    return MetricsPage(
        offset=start,
        next_offset=tail.offset,
        segment=segment,
        downsampled=any(len(s.steps) < s.points for s in series.values()),
        series=series,
        rewinds=rewinds,
    )


def _series(steps: list[int], values: list[float], max_points: int) -> Series:
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    finite = np.isfinite(y)
    keep = np.flatnonzero(finite)
    if len(keep) > max_points:
        keep = keep[lttb(x[keep], y[keep], max_points)]
    kept = np.union1d(keep, np.flatnonzero(~finite))
    return Series(
        steps=[steps[i] for i in kept],
        values=[values[i] if finite[i] else None for i in kept],
        points=len(steps),
    )


def record(
    step: int, rng: random.Random, segment: int = 0, nan_every: int = 13, **extra: object
) -> str:
    metrics: dict[str, float] = {"train/loss": rng.gauss(1, 0.3), "lr": 1e-3}
    if step % 7 == 0:
        metrics["grad/norm"] = rng.random()
    if step % 10 == 0:
        metrics = {"val/loss": rng.random(), **metrics}  # another name order, another group
    if step % nan_every == 0:
        metrics["train/loss"] = rng.choice([float("nan"), float("inf"), float("-inf")])
    line = MetricRecord(step=step, wall_time=1.0 + step, metrics=metrics, segment=segment)
    return line.model_copy(update=extra).to_line()


def write_run(run_dir: Path, *, segment: int = 1, garbage: bool = True) -> int:
    """Segment 0 (steps 0-99), then segment ``segment`` with a rewind, foreign lines and a
    torn last line; returns where the second segment starts."""
    rng = random.Random(0)
    run_dir.mkdir(exist_ok=True)
    lines = [record(s, rng) for s in range(100)]
    first = "".join(lines)
    second = [record(s, rng, segment) for s in range(300)]
    second[150] = record(120, rng, segment, rewound_to=100)
    if garbage:
        for i, text in enumerate(GARBAGE):  # in the segment, or the filter would drop them
            text = f'{{"segment": {segment}, {text[1:]}' if text.startswith("{") else text
            second.insert(3 + 11 * i, text + "\n")
    torn = record(300, rng, segment)[:25]
    (run_dir / METRICS_FILE).write_text(first + "".join(second) + torn)
    state(run_dir, segment, len(first.encode()))
    return len(first.encode())


def state(run_dir: Path, segment: int, start: int) -> None:
    write_kernel_state(
        run_dir,
        KernelState(
            pid=1, host="h", started_at=0.0, heartbeat=0.0, segment=segment, metrics_start=start
        ),
    )


def append(run_dir: Path, text: str) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(text)


def same(run_dir: Path, cache: ColumnCache, names: list[str] | None = None, points: int = 40):
    state_ = json.loads((run_dir / "kernel.json").read_text())
    got = cache.page(
        run_dir,
        start=state_["metrics_start"],
        segment=state_["segment"],
        names=names,
        max_points=points,
    )
    want = reference_page(run_dir, 0, names, points)
    assert got == want
    assert list(got.series) == list(want.series)
    return got


@pytest.mark.parametrize("kernel_json", [True, False])
def test_chunks_of_plain_lines_read_as_line_by_line(tmp_path: Path, kernel_json: bool) -> None:
    rng = random.Random(9)
    lines = [record(s, rng, nan_every=10**9) for s in range(1, 1200)]
    start = len("".join(lines).encode())
    lines += [record(s, rng, 1, nan_every=10**9) for s in range(1, 2500)]
    lines[2500] = record(1300, rng, 1)  # a NaN: that chunk line by line
    (tmp_path / METRICS_FILE).write_text("".join(lines))
    if kernel_json:
        state(tmp_path, 1, 0)  # segment 0's lines are read, and dropped
    for points in (50, 10_000):
        page = metrics_page(tmp_path, 0, None, points)
        assert page == reference_page(tmp_path, 0, None, points)
        assert list(page.series) == list(reference_page(tmp_path, 0, None, points).series)
    if kernel_json:
        state(tmp_path, 1, start)
        assert metrics_page(tmp_path, 0, None, 50) == reference_page(tmp_path, 0, None, 50)


@pytest.mark.parametrize("names", [None, ["lr", "train/loss"], ["val/loss", "missing"]])
@pytest.mark.parametrize("points", [3, 40, 10_000])
def test_a_page_is_the_straightforward_readers_page(tmp_path: Path, names, points) -> None:
    write_run(tmp_path)
    page = metrics_page(tmp_path, 0, names, points)
    assert page == reference_page(tmp_path, 0, names, points)
    assert list(page.series) == list(reference_page(tmp_path, 0, names, points).series)
    assert metrics_page(tmp_path, 0, names, points) == page  # again, from the cache


def test_the_page_has_the_rewind_the_non_finite_values_and_only_its_segment(
    tmp_path: Path,
) -> None:
    write_run(tmp_path)
    page = metrics_page(tmp_path, 0, None, 10_000)
    assert page.rewinds == [(120, 100)] and page.segment == 1
    loss = page.series["train/loss"]
    # 300 records, and 7 of the foreign-looking lines are valid records of train/loss
    assert None in loss.values and loss.points == len(loss.steps) == 307
    assert page.series["a:b"].values == [1.0]
    state(tmp_path, 1, 0)  # the segment's records only, wherever they start
    assert metrics_page(tmp_path, 0, None, 10_000).series["train/loss"].points == 307


def test_an_offset_reads_from_there(tmp_path: Path) -> None:
    write_run(tmp_path)
    first = metrics_page(tmp_path, 0, None, 40)
    append(tmp_path, record(300, random.Random(1), 1)[25:] + record(301, random.Random(1), 1))
    more = metrics_page(tmp_path, first.next_offset, None, 40)
    assert more == reference_page(tmp_path, first.next_offset, None, 40)
    assert more.series["lr"].steps == [300, 301]


def test_appends_extend_the_cached_columns(tmp_path: Path) -> None:
    write_run(tmp_path)
    cache, rng = ColumnCache(), random.Random(2)
    same(tmp_path, cache)
    append(tmp_path, record(300, rng, 1)[25:])  # the torn line completed
    same(tmp_path, cache)
    append(tmp_path, "".join(record(s, rng, 1) for s in range(301, 400)) + "garbage\n")
    same(tmp_path, cache, points=10_000)
    append(tmp_path, record(400, rng, 1, rewound_to=350) + record(401, rng, 0))
    page = same(tmp_path, cache)
    assert page.rewinds[-1] == (400, 350) and cache.rebuilds == 0


def test_a_replaced_shrunken_rotated_or_new_segment_file_is_read_again(tmp_path: Path) -> None:
    write_run(tmp_path)
    cache = ColumnCache()
    same(tmp_path, cache)
    write_run(tmp_path, garbage=False)  # written again in place: shorter
    same(tmp_path, cache)
    replacement = tmp_path / "new.jsonl"
    replacement.write_text("".join(record(s, random.Random(3), 1) for s in range(50)))
    os.replace(replacement, tmp_path / METRICS_FILE)  # a new inode
    state(tmp_path, 1, 0)
    same(tmp_path, cache)
    os.rename(tmp_path / METRICS_FILE, tmp_path / "metrics.1.jsonl")  # rotated
    append(tmp_path, record(50, random.Random(4), 1))
    same(tmp_path, cache)
    start = (tmp_path / METRICS_FILE).stat().st_size
    append(tmp_path, record(0, random.Random(5), 2))
    state(tmp_path, 2, start)  # a new segment
    assert same(tmp_path, cache).series["lr"].steps == [0]
    assert cache.rebuilds >= 3


def test_a_start_past_the_end_is_read_as_the_straightforward_reader_reads_it(
    tmp_path: Path,
) -> None:
    write_run(tmp_path)
    start = (tmp_path / METRICS_FILE).stat().st_size + 50
    state(tmp_path, 1, start)  # the reader starts over from byte 0, until the file grows
    cache = ColumnCache()
    assert same(tmp_path, cache).series["lr"].points > 300
    append(tmp_path, "\n" + "".join(record(s, random.Random(6), 1) for s in range(500, 520)))
    assert same(tmp_path, cache).series["lr"].steps[0] > 500  # from ``start`` on


def test_the_cache_keeps_runs_within_its_size(tmp_path: Path) -> None:
    runs = [tmp_path / f"run{i}" for i in range(3)]
    for run in runs:
        write_run(run)
    cache = ColumnCache(max_bytes=1)  # only the run last read stays
    for run in runs + runs:
        same(run, cache)
    assert list(cache._entries) == [str(runs[-1] / METRICS_FILE)]


def test_concurrent_requests_on_a_growing_run_agree(tmp_path: Path) -> None:
    write_run(tmp_path, garbage=False)
    append(tmp_path, "\n")
    cache, errors = ColumnCache(), []

    def read() -> None:
        try:
            for _ in range(15):
                cache.page(tmp_path, start=0, segment=1, names=None, max_points=40)
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    rng = random.Random(7)
    for step in range(1000, 1100):
        append(tmp_path, record(step, rng, 1))
    for reader in readers:
        reader.join()
    assert not errors
    state(tmp_path, 1, 0)
    same(tmp_path, cache)


def test_without_orjson_the_model_reads_every_line(tmp_path: Path, monkeypatch) -> None:
    write_run(tmp_path)
    monkeypatch.setattr(metric_lines, "_loads", None)
    same(tmp_path, ColumnCache())


def test_the_fast_road_accepts_exactly_what_the_model_accepts() -> None:
    rng = random.Random(8)
    pieces = ['"step":1', '"step":-3', '"step":2.0', '"step":true', '"step":"4"', '"step":1e3']
    values = ["0.5", "-0.0", "1", "10000000000000000", "true", "null", '"NaN"', '"Infinity"',
              '"-Infinity"', '"inf"', '"1.5"', "NaN", "1e999", "[1]", "{}", '" 2"']  # fmt: skip
    extras = ['"segment":1', '"segment":null', '"rewound_to":3', '"rewound_to":null',
              '"wall_time":null', '"wall_time":"x"', '"wall_time":5', '"nonfinite":["a"]',
              '"nonfinite":[1]', '"other":[[1]]', '"metrics":{"a":1}']  # fmt: skip
    for _ in range(3000):
        metrics = ",".join(
            f'"{rng.choice(["a", "b", "a:b", "c"])}":{rng.choice(values)}'
            for _ in range(rng.randint(0, 3))
        )
        fields = [rng.choice(pieces), f'"metrics":{{{metrics}}}']
        fields += rng.sample(extras, rng.randint(0, 2))
        rng.shuffle(fields)
        text = "{" + ",".join(fields) + "}"
        try:
            model = MetricRecord.model_validate_json(text)
        except ValidationError:
            expected = None
        else:
            expected = (model.segment, model.step, model.rewound_to, model.metrics)
        fast = metric_lines._fast(text)
        if fast is None:
            continue  # the model's road then
        assert expected is not None, text
        assert repr(fast) == repr(expected), text
