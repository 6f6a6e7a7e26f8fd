"""The real-log fetcher, against a real HTTP server on loopback serving a synthetic source."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals.real_logs.build import Source
from evals.real_logs.fetch import fetch, main


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[str]:
    """``BASE/<owner>/<repo>/<commit>/<path>`` served from ``tmp_path / "www"``."""
    www = tmp_path / "www"
    state = {"log_history": [{"step": s, "loss": 2.0 / s} for s in range(10, 210, 10)]}
    file = www / "o" / "r" / "c0ffee" / "checkpoint-5" / "trainer_state.json"
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(state))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _source(path: str) -> Source:
    return Source(repo="o/r", path=path, commit="c0ffee", label="healthy")


def test_fetch_downloads_each_source_to_its_place_and_reports_the_missing(
    mirror: str, tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    sources = [_source("checkpoint-5/trainer_state.json"), _source("gone/trainer_state.json")]
    problems = fetch(root, sources, base=mirror)
    got = root / "o" / "r" / "checkpoint-5" / "trainer_state.json"
    assert json.loads(got.read_text())["log_history"][0] == {"step": 10, "loss": 0.2}
    assert len(problems) == 1 and problems[0].startswith("o/r/gone/trainer_state.json: ")
    assert "404" in problems[0]


def test_fetch_keeps_a_file_already_there(mirror: str, tmp_path: Path) -> None:
    root = tmp_path / "logs"
    kept = root / "o" / "r" / "checkpoint-5" / "trainer_state.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    assert fetch(root, [_source("checkpoint-5/trainer_state.json")], base=mirror) == []
    assert kept.read_text() == "{}"


def test_the_cli_refuses_a_base_url_that_is_not_http(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path), "--base-url", "file:///etc"])
    assert exited.value.code == 2
    assert "--base-url must be an http(s) URL" in capsys.readouterr().err
