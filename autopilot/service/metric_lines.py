"""``metrics.jsonl`` lines read in bulk for the metrics API, by ``MetricRecord``'s rules.

Validating 100k lines one by one with ``MetricRecord.model_validate_json`` is most of the
time a long run takes to open. ``parse`` takes a faster road for the lines the kernel
writes, and the model's own road for every other line, so that what is accepted, and as
what, stays exactly what ``MetricRecord`` accepts:

* chunks of 512 of the kernel's everyday lines (the same keys on every line, finite values)
  are parsed and checked at once, with C-level ``map`` calls; a chunk with any other line
  is read line by line:
* the fast road parses a line with ``orjson`` (when it is installed: the LangGraph stack
  brings it; without it every line takes the model's road) and accepts it only when every
  field is of the one plain type the model would keep unchanged: an ``int`` step, segment
  and rewind marker, finite numbers or the kernel's ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"`` as metric values, a list of strings as ``nonfinite``, no other key;
* a line with as many ``:`` as keys is known to repeat no key (each key brings one ``:``,
  a string may bring more): the model checks every value of a repeated metric name, where a
  parsed dict keeps only the last one;
* anything else (a non-finite literal, a number as a string, a bool, a huge integer, a
  foreign line) is left to ``MetricRecord.model_validate_json``, exactly as before.

Example:
    >>> batch = parse([(0, '{"step":3,"metrics":{"loss":"NaN"},"nonfinite":["loss"]}'),
    ...                (60, 'not json'), (69, '{"step":4,"metrics":{"loss":1}}')], None)
    >>> group = batch.groups[("loss",)]
    >>> group.steps, group.values
    ([3, 4], [nan, 1.0])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from pydantic import ValidationError

from kernel import MetricRecord

logger = logging.getLogger(__name__)

_loads: Callable[[str], Any] | None
try:
    import orjson
except ImportError:  # optional: the model's road is correct, only slower
    _loads = None
else:
    _loads = orjson.loads

_FIELDS = frozenset(MetricRecord.model_fields)
_FLOAT, _STR, _INT, _DICT = frozenset([float]), frozenset([str]), {int}, {dict}
_WALL_TYPES = frozenset([float, int, type(None)])
_STEP, _METRICS = itemgetter("step"), itemgetter("metrics")
_WALL_TIME, _SEGMENT = itemgetter("wall_time"), itemgetter("segment")
_CHUNK = 512
"""Lines parsed at once: one odd line sends its chunk down the line-by-line road."""
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_EXACT = 2**53
"""Integers up to this size are the same float whoever converts them."""
_said_slow = False


@dataclass
class Group:
    """The records of a batch that log the same metric names, in the same order."""

    rows: list[int] = field(default_factory=list)
    """Each record's place in the batch."""
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    """Row-major: ``len(names)`` values a record."""


@dataclass
class Batch:
    """The valid records of one segment among some lines, grouped by their names."""

    groups: dict[tuple[str, ...], Group] = field(default_factory=dict)
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    """``(step, snapshot step)`` of each record that carries a rewind marker."""
    records: int = 0

    def add(self, step: int, rewound_to: int | None, metrics: dict[str, float]) -> None:
        names = tuple(metrics)
        group = self.groups.get(names)
        if group is None:
            group = self.groups[names] = Group()
        group.rows.append(self.records)
        group.steps.append(step)
        group.values.extend(metrics.values())
        if rewound_to is not None:
            self.rewinds.append((step, rewound_to))
        self.records += 1

    def extend(self, names: tuple[str, ...], steps: list[int], values: list[float]) -> None:
        """Add records of the same ``names``, without rewind markers."""
        group = self.groups.get(names)
        if group is None:
            group = self.groups[names] = Group()
        group.rows.extend(range(self.records, self.records + len(steps)))
        group.steps.extend(steps)
        group.values.extend(values)
        self.records += len(steps)


def parse(lines: Iterable[tuple[int, str]], segment: int | None) -> Batch:
    """The valid metric records of ``segment`` (None: of every segment) among
    ``JsonlTail.read_new()``'s lines; a line that is not a ``MetricRecord`` is skipped."""
    batch = Batch()
    texts = [text for _, text in lines]
    if _loads is None:
        _say_slow()
        _by_line(texts, segment, batch, fast=False)
        return batch
    for at in range(0, len(texts), _CHUNK):
        chunk = texts[at : at + _CHUNK]
        if not _plain_chunk(chunk, segment, batch):
            _by_line(chunk, segment, batch, fast=True)
    return batch


def _by_line(texts: list[str], segment: int | None, batch: Batch, *, fast: bool) -> None:
    for text in texts:
        found = _fast(text) if fast else None
        if found is None:
            found = _by_model(text)
            if found is None:
                continue
        if segment is None or found[0] == segment:
            batch.add(*found[1:])


def _plain_chunk(texts: list[str], segment: int | None, batch: Batch) -> bool:
    """Add a chunk of the kernel's everyday lines at once (``step``, ``wall_time``,
    finite ``metrics``, maybe ``segment``: the same keys on every line); False, adding
    nothing, when a line is anything else."""
    assert _loads is not None
    try:
        docs = list(map(_loads, texts))
    except ValueError:
        return False
    if set(map(type, docs)) != _DICT or len(sizes := set(map(len, docs))) != 1:
        return False
    size = sizes.pop()
    try:
        steps = list(map(_STEP, docs))
        metrics = list(map(_METRICS, docs))
        walls = set(map(type, map(_WALL_TIME, docs)))
        segments = set(map(_SEGMENT, docs)) if size == 4 else {0}
    except KeyError:  # other keys: one by one
        return False
    if size not in (3, 4) or set(map(type, steps)) != _INT or set(map(type, metrics)) != _DICT:
        return False
    if not walls <= _WALL_TYPES or set(map(type, segments)) != _INT:
        return False
    colons = list(map(str.count, texts, repeat(":")))
    if colons != list(map(size.__add__, map(len, metrics))):  # a repeated key, or ':' in a name
        return False
    values = list(chain.from_iterable(map(dict.values, metrics)))
    if not set(map(type, values)) <= _FLOAT:  # orjson never returns a non-finite float
        return False
    if segment is not None and segments != {segment}:
        return segment not in segments  # none of the segment's, or mixed: one by one
    names = list(map(tuple, metrics))
    if len(set(names)) == 1:
        batch.extend(names[0], steps, values)
    else:
        for step, found in zip(steps, metrics, strict=True):
            batch.add(step, None, found)
    return True


_Found = tuple[int, int, int | None, dict[str, float]]
"""A valid record's segment, step, rewind marker and metrics."""


def _fast(text: str) -> _Found | None:
    """The record, when the line is plain enough to be read without the model; else None."""
    assert _loads is not None
    try:
        doc = _loads(text)
    except ValueError:  # orjson.JSONDecodeError: not JSON, or a literal orjson refuses
        return None
    if type(doc) is not dict or not doc.keys() <= _FIELDS:
        return None
    step, metrics = doc.get("step"), doc.get("metrics", {})
    if type(step) is not int or type(metrics) is not dict:
        return None
    if text.count(":") != len(doc) + len(metrics):  # a repeated key, or ':' in a string
        return None
    segment, rewound_to = doc.get("segment", 0), doc.get("rewound_to")
    if type(segment) is not int or not (rewound_to is None or type(rewound_to) is int):
        return None
    wall_time, nonfinite = doc.get("wall_time"), doc.get("nonfinite", [])
    if not (wall_time is None or type(wall_time) is float or type(wall_time) is int):
        return None
    if type(nonfinite) is not list or not _STR.issuperset(map(type, nonfinite)):
        return None
    # orjson never returns a non-finite float
    if not _FLOAT.issuperset(map(type, metrics.values())) and not _convert(metrics):
        return None
    return segment, step, rewound_to, metrics


def _convert(metrics: dict[str, Any]) -> bool:
    """Turn the kernel's non-finite strings and exact integers into floats, in place;
    False when a value is anything else."""
    for name, value in metrics.items():
        kind = type(value)
        if kind is int and -_EXACT <= value <= _EXACT:
            metrics[name] = float(value)
        elif kind is str and value in _NONFINITE:
            metrics[name] = _NONFINITE[value]
        elif kind is not float:
            return False
    return True


def _by_model(text: str) -> _Found | None:
    try:
        record = MetricRecord.model_validate_json(text)
    except ValidationError:
        return None  # a line written by something else
    return record.segment, record.step, record.rewound_to, record.metrics


def _say_slow() -> None:
    global _said_slow
    if not _said_slow:
        _said_slow = True
        logger.info(
            "orjson is not installed: metrics.jsonl lines are validated one by one with "
            "MetricRecord (correct, about twice as slow); pip install orjson to speed it up"
        )
