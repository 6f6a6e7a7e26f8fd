"""The service's FastAPI application: ``create_app`` wires the routes (``routes``) to a
``Fleet`` of runs, the token check and the error answers.

Every refusal is a 4xx whose ``detail`` says the rule and what to do: 401 without the token
(where one is needed), 404 for a run or proposal that does not exist (a path outside the
root names no run), 409 when the run's state refuses the action (it has ended, the proposal
was decided, the guards reject every action), 422 for a body or query that does not fit
the schema. Status codes are chosen here only; the core raises its own errors.

Example:
    >>> import tempfile
    >>> from autopilot.service.auth import Token
    >>> app = create_app(tempfile.mkdtemp(), token=Token(value="t" * 32, source="test"))
    >>> app.title
    'train-autopilot'
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from autopilot.config import Mode
from autopilot.errors import AutopilotError, ReviewError
from autopilot.service import dashboard, views
from autopilot.service.auth import Token
from autopilot.service.routes import ServiceState, router
from autopilot.service.runs import Fleet
from kernel.errors import KernelError
from kernel.validation import summarize_validation_error

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(
    root: str | os.PathLike[str],
    *,
    token: Token,
    reads_need_token: bool = False,
    fleet: Fleet | None = None,
    default_mode: Mode | None = None,
    config: str | None = None,
    tick: bool = False,
    warm: bool = False,
) -> FastAPI:
    """The application serving the runs under ``root``.

    Args:
        root: the directory of run directories.
        token: the bearer token every write needs.
        reads_need_token: whether reads need it too (any address but loopback).
        fleet: the runs and their autopilots; one over ``root`` when ``None``.
        default_mode: the mode of runs that set none (``serve --mode``).
        config: the user's ``autopilot.toml``.
        tick: whether the application starts the fleet's autopilots while it lives.
        warm: whether it reads the runs' metrics into its cache once it starts, in a
            thread (``views.warm``), so that a run opens fast the first time too.
    """
    fleet = fleet or Fleet(root, default_mode=default_mode, config=config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if tick:
            fleet.start()
        if warm:
            threading.Thread(
                target=lambda: views.warm(fleet.scan(tick=False).values()),
                name="autopilot-serve-warm",
                daemon=True,
            ).start()
        try:
            yield
        finally:
            if tick:
                fleet.stop()

    app = FastAPI(
        title="train-autopilot",
        version="1",
        summary="The runs under one root, their autopilots, review queues and commands.",
        lifespan=lifespan,
    )
    app.state.service = ServiceState(
        root=Path(root), fleet=fleet, token=token, reads_need_token=reads_need_token, config=config
    )
    app.include_router(router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    _errors(app)
    if not reads_need_token:
        _open_reads_in_schema(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ReviewError)
    async def review_error(_: Request, exc: ReviewError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(AutopilotError)
    async def autopilot_error(_: Request, exc: AutopilotError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(KernelError)
    async def kernel_error(_: Request, exc: KernelError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, headers = str(exc.detail), dict(exc.headers or {})
        if exc.status_code == 400 and "parsing the body" in detail:  # FastAPI's own wording
            detail = "the body cannot be read: send one JSON object, UTF-8 encoded"
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return JSONResponse(
            status_code=exc.status_code, content={"detail": detail}, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's error has pydantic's error list: the one summary reads it
        detail = summarize_validation_error(cast(ValidationError, exc), limit=5)
        return JSONResponse(status_code=422, content={"detail": detail[:2000]})


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on the request's path (Starlette's own 405 names only
    the first route's, while GET and PUT of one path are two routes)."""
    path = request.url.path.removeprefix(API_PREFIX)
    scope = {"type": "http", "path": path, "method": request.method, "root_path": ""}
    methods: set[str] = set()
    for route in router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _open_reads_in_schema(app: FastAPI) -> None:
    """On loopback reads need no token: the schema says so (their ``security`` is dropped)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for item in schema.get("paths", {}).values():
                get = item.get("get")
                if get is not None:
                    get.pop("security", None)
                    get.get("responses", {}).pop("401", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
