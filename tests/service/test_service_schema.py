"""Schemathesis against the OpenAPI schema, over a root with a real run: whatever fits (or
does not fit) the schema, the service never answers 5xx, and every 4xx carries a message.

It runs in process (``from_asgi``): no network is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from _service_runs import AUTH, TOKEN, Training
from hypothesis import HealthCheck, settings

from autopilot.service import create_app
from autopilot.service.runs import Fleet

ROOT: Path | None = None


def _app() -> object:
    global ROOT
    import tempfile

    ROOT = Path(tempfile.mkdtemp(prefix="schemathesis-runs-"))
    Training(ROOT / "exp1", steps=30, pace_s=0.0).join()  # a real run directory, ended
    return create_app(ROOT, token=TOKEN, fleet=Fleet(ROOT))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@pytest.fixture(autouse=True)
def _no_stream_endpoint(request: pytest.FixtureRequest) -> None:
    if "/stream" in request.node.name:
        pytest.skip("an endless event stream (tested against the real server)")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_4xx_says_why(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and len(detail) > 10, response.text
    case.validate_response(response)
