"""Append-only JSON lines, incremental reading with torn-line safety, atomic documents."""

from __future__ import annotations

import json
import logging
import os

import pytest
from pydantic import BaseModel

from kernel.jsonl import JsonlTail, append_json, append_line, read_json, write_json_atomic


def test_append_line_returns_the_offset_each_line_starts_at(tmp_path):
    path = tmp_path / "f.jsonl"
    offsets = [append_line(path, text) for text in ('{"a":1}', '{"bb":22}', '{"c":3}')]
    data = path.read_bytes()
    assert offsets == [0, 8, 18]
    assert [data[o:].split(b"\n")[0] for o in offsets] == [b'{"a":1}', b'{"bb":22}', b'{"c":3}']


def test_append_line_closes_a_torn_fragment_before_appending(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id": "half-writ')  # a writer died mid-line
    offset = append_line(path, '{"id":"whole"}')
    lines = path.read_bytes().split(b"\n")
    assert lines == [b'{"id": "half-writ', b'{"id":"whole"}', b""]
    assert path.read_bytes()[offset:] == b'{"id":"whole"}\n'


def test_append_line_refuses_an_embedded_newline(tmp_path):
    with pytest.raises(ValueError, match="newline"):
        append_line(tmp_path / "f.jsonl", '{"a":\n1}')


def test_append_json_writes_strict_json(tmp_path):
    path = tmp_path / "f.jsonl"
    append_json(path, {"x": [1, 2], "y": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": [1, 2], "y": "é"}
    with pytest.raises(ValueError):
        append_json(path, {"x": float("nan")})


def test_read_new_returns_complete_lines_with_their_offsets(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n\n  \n{"b":2}\n')
    tail = JsonlTail(path)
    assert tail.read_new() == [(0, '{"a":1}'), (12, '{"b":2}')]
    assert tail.read_new() == []
    append_line(path, '{"c":3}')
    assert tail.read_new() == [(20, '{"c":3}')]


def test_read_new_keeps_a_torn_last_line_until_its_newline_arrives(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    tail = JsonlTail(path)
    assert tail.read_new() == [(0, '{"a":1}')]
    with path.open("ab") as f:
        f.write(b"2")
    assert tail.read_new() == []
    with path.open("ab") as f:
        f.write(b'}\n{"c":3}\n')
    assert tail.read_new() == [(8, '{"b":2}'), (16, '{"c":3}')]


def test_read_new_starts_at_a_given_offset(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n')
    assert JsonlTail(path, offset=8).read_new() == [(8, '{"b":2}')]


def test_read_new_decodes_invalid_utf8_instead_of_raising(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'\xff\xfe{"a":1}\n')
    [(offset, text)] = JsonlTail(path).read_new()
    assert offset == 0
    assert text.endswith('{"a":1}')


def test_changed_is_false_until_something_is_appended(tmp_path):
    path = tmp_path / "f.jsonl"
    tail = JsonlTail(path)
    assert not tail.changed()  # no file yet
    append_line(path, '{"a":1}')
    assert tail.changed()
    tail.read_new()
    assert not tail.changed()
    assert not tail.changed()
    append_line(path, '{"b":2}')
    assert tail.changed()


def test_a_shrunk_file_is_read_again_from_its_start(tmp_path, caplog):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n')
    tail = JsonlTail(path)
    tail.read_new()
    path.write_bytes(b'{"z":0}\n')
    with caplog.at_level(logging.WARNING):
        assert tail.read_new() == [(0, '{"z":0}')]
    assert "append-only" in caplog.text and tail.resets == 1
    append_line(path, '{"c":3}')
    assert tail.read_new() == [(8, '{"c":3}')]


def test_a_file_written_again_to_the_same_size_is_read_again(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n')
    tail = JsonlTail(path)
    tail.read_new()
    with open(path, "r+b") as f:  # truncated and written again in place: same inode, size
        f.truncate(0)
        f.write(b'{"y":8}\n{"z":9}\n')
    os.utime(path, ns=(1, 1))  # a coarse clock may give the rewrite the old mtime
    assert tail.changed()
    assert tail.read_new() == [(0, '{"y":8}'), (8, '{"z":9}')]
    assert tail.resets == 1


def test_a_replaced_file_is_read_from_its_start(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n')
    tail = JsonlTail(path)
    tail.read_new()
    other = tmp_path / "g.jsonl"
    other.write_bytes(b'{"a":1}\n{"b":2}\n')
    os.replace(other, path)
    assert tail.read_new() == [(0, '{"a":1}'), (8, '{"b":2}')]
    assert tail.resets == 1


def test_an_appended_file_is_not_reset(tmp_path):
    path = tmp_path / "f.jsonl"
    tail = JsonlTail(path)
    for i in range(3):
        append_line(path, f'{{"n":{i}}}')
        assert [text for _, text in tail.read_new()] == [f'{{"n":{i}}}']
    assert tail.resets == 0


def test_blank_lines_are_kept_when_asked(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\n  \n\n{"b":2}\n')
    assert [o for o, _ in JsonlTail(path).read_new()] == [0, 12]
    assert [o for o, _ in JsonlTail(path, keep_blank=True).read_new()] == [0, 8, 11, 12]


def test_read_new_of_a_missing_file_is_empty(tmp_path):
    assert JsonlTail(tmp_path / "nope.jsonl").read_new() == []


def test_write_json_atomic_round_trips_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "doc.json"
    doc = {"a": [1, 2.5, None], "b": {"c": "ü"}, "d": True}
    write_json_atomic(path, doc)
    write_json_atomic(path, {**doc, "e": 1})
    assert read_json(path) == {**doc, "e": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_write_json_atomic_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "doc.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})
    assert read_json(path) == {"a": 1}


def test_read_json_of_a_missing_file_is_none(tmp_path):
    assert read_json(tmp_path / "nope.json") is None


def test_a_device_in_place_of_a_jsonl_file_is_refused_unread() -> None:
    """``/dev/zero`` never ends: reading it (as the untrusted reader did) never returned."""
    from kernel.untrusted import read_valid

    class Row(BaseModel):
        a: int

    assert read_valid("/dev/zero", Row) == []
