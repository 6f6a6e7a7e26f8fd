"""``serve`` reads its runs' metrics into the cache when it starts, so a run's first open is
served from cached columns and a page made already, the one the dashboard asks for."""

from __future__ import annotations

from pathlib import Path

from _service_runs import TOKEN, poll
from fastapi.testclient import TestClient

from autopilot.service import Fleet, create_app
from autopilot.service.metric_columns import COLUMNS


def test_the_runs_metrics_are_read_once_the_service_starts(root: Path, train) -> None:
    runs = [train(name, steps=300) for name in ("exp1", "exp2")]
    for run in runs:
        run.join()
    COLUMNS.clear()
    app = create_app(root, token=TOKEN, fleet=Fleet(root), warm=True)
    with TestClient(app) as client:
        poll(lambda: COLUMNS.nbytes >= 2 * 300 * 16, what="both runs' columns cached")
        cached = COLUMNS.nbytes
        page = client.get("/api/v1/runs/exp1/metrics").json()
        assert COLUMNS.nbytes == cached  # served from what was read: nothing read again
    assert page["series"]["train/loss"]["points"] == 300
    COLUMNS.clear()
    with TestClient(create_app(root, token=TOKEN, fleet=Fleet(root))) as client:
        assert client.get("/api/v1/runs/exp1/metrics").json() == page  # as read cold
