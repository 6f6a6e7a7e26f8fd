"""A scripted OpenAI-compatible chat server on 127.0.0.1, for the real ``openai`` client.

A test sets a script: one reply per request, in order, the last one repeating. Each reply
is a function of the request body that returns a response (or an awaitable of one). The
server records every request it receives, so a test can prove a call was, or was not, made.

Example:
    >>> llm_server.script(status(429, headers=FAST_RETRY), answer({"kind": "healthy"}))
    >>> len(llm_server.calls)        # after the client's call
    2
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

Body = dict[str, Any]
Reply = Callable[[Body], Response | Awaitable[Response]]

USAGE = {"prompt_tokens": 120, "completion_tokens": 40, "cached_tokens": 0}
"""What ``answer`` reports by default."""
FAST_RETRY = {"retry-after-ms": "1"}
"""Headers that make the client retry at once (no real backoff sleep in tests)."""


def answer(
    content: str | dict[str, Any],
    *,
    usage: bool = True,
    prompt_tokens: int = USAGE["prompt_tokens"],
    completion_tokens: int = USAGE["completion_tokens"],
    cached_tokens: int = USAGE["cached_tokens"],
    finish: str = "stop",
) -> Reply:
    """A chat completion whose message is ``content`` (a dict is sent as JSON text)."""
    text = content if isinstance(content, str) else json.dumps(content)

    def reply(body: Body) -> Response:
        data: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "m"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": text},
                }
            ],
        }
        if usage:
            data["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            }
        return JSONResponse(data)

    return reply


def status(
    code: int, message: str = "scripted failure", *, headers: dict[str, str] | None = None
) -> Reply:
    """An OpenAI-style error body with HTTP ``code``."""
    error = {"error": {"message": message, "type": "scripted", "param": None, "code": None}}
    return lambda body: JSONResponse(error, status_code=code, headers=headers)


def raw(text: str, *, media_type: str = "text/html", code: int = 200) -> Reply:
    """Any body at all (an HTML page, broken JSON, ``{}``)."""
    return lambda body: Response(text, status_code=code, media_type=media_type)


def slow(seconds: float, then: Reply) -> Reply:
    """``then``, after ``seconds`` (an async sleep: the server keeps serving meanwhile)."""

    async def reply(body: Body) -> Response:
        await asyncio.sleep(seconds)
        result = then(body)
        return await result if inspect.isawaitable(result) else result

    return reply


def rejects_json_schema(then: Reply) -> Reply:
    """HTTP 400 for ``response_format`` of type ``json_schema`` (as some providers do)."""

    def reply(body: Body) -> Response | Awaitable[Response]:
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return status(400, "response_format of type 'json_schema' is not supported")(body)
        return then(body)

    return reply


LLAMA_CPP_REFUSAL = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
)
"""What llama-cpp-python 0.3.36's server answers to ``type: json_schema`` (with HTTP 500)."""


def llama_cpp(then: Reply, *, code: int = 500) -> Reply:
    """The stock llama-cpp-python server's handling of ``response_format``.

    It accepts only ``text`` and ``json_object`` (optionally with a ``schema`` that it turns
    into a grammar) and refuses anything else with HTTP ``code``: 500 in 0.3.36 (measured),
    422 in versions that let FastAPI validate the body."""

    def reply(body: Body) -> Response | Awaitable[Response]:
        kind = (body.get("response_format") or {}).get("type", "text")
        if kind not in ("text", "json_object"):
            error_type = "internal_server_error" if code >= 500 else "invalid_request_error"
            error = {"message": LLAMA_CPP_REFUSAL, "type": error_type, "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=code)
        return then(body)

    return reply


def refuses_schemas(then: Reply, *, code: int = 400) -> Reply:
    """HTTP ``code`` for any ``response_format`` but plain ``{"type": "json_object"}``."""

    def reply(body: Body) -> Response | Awaitable[Response]:
        if body.get("response_format") != {"type": "json_object"}:
            return status(code, "unsupported response_format")(body)
        return then(body)

    return reply


class ScriptedLLM:
    """The app, its script and the requests it received."""

    def __init__(self) -> None:
        self.calls: list[Body] = []
        self.port = 0
        self._script: list[Reply] = []
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])
        self.reset()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order; the last one repeats."""
        if not replies:
            raise ValueError("a script needs at least one reply")
        self._script = list(replies)

    def reset(self) -> None:
        self.calls.clear()
        self._script = [status(500, "no script set for this test")]

    def messages(self, call: int = -1) -> list[dict[str, Any]]:
        """The messages of request ``call`` (default: the last)."""
        return self.calls[call]["messages"]

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        reply = self._script[min(len(self.calls), len(self._script)) - 1]
        result = reply(body)
        return await result if inspect.isawaitable(result) else result


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port, in a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # set once uvicorn listens
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the scripted LLM server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
