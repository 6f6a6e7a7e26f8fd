"""``autopilot doctor`` before the first decision: a live run with its key metric, memory and
one real call to a provider (the scripted OpenAI-compatible server) pass; a model without a
price, a provider that fails, an undeclared-but-missing key metric and a missing run
directory are each reported with what to do, and a failure exits 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llm_server import answer, status

from autopilot.cli import main
from kernel import Kernel, KernelSettings

KEY_ENV = "AUTOPILOT_TEST_LLM_KEY"


def _config(tmp_path: Path, llm_server: Any, *, price: bool = True, **detectors: str) -> Path:
    lines = [
        'mode = "ai_auto"',
        "[llm]",
        f'base_url = "{llm_server.base_url}"',
        'model = "test-model"',
        f'api_key_env = "{KEY_ENV}"',
        "timeout_s = 5.0",
        "max_retries = 0",
    ]
    if price:
        lines += ['[prices."test-model"]', "input = 1.0", "output = 2.0"]
    if detectors:
        lines += ["[detectors]", *(f'{k} = "{v}"' for k, v in detectors.items())]
    path = tmp_path / "autopilot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _live_run(run_dir: Path) -> Kernel:
    fast = KernelSettings(poll_interval_s=0.0, flush_interval_s=0.0)
    kernel = Kernel(run_dir, key_metric="val/loss", settings=fast)
    for step in range(1, 31):
        metrics = {"train/loss": 1.0 / step}
        if step % 10 == 0:
            metrics["val/loss"] = 1.2 / step
        kernel.log(step, metrics)
        kernel.step(step)
    return kernel


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")


def test_a_live_run_with_a_working_provider_passes_every_check(
    tmp_path: Path, llm_server: Any, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_server.script(answer({"ok": True}, prompt_tokens=40, completion_tokens=6))
    kernel = _live_run(tmp_path / "run")
    try:
        code = main(
            [
                "--dir",
                str(tmp_path / "run"),
                "doctor",
                "--config",
                str(_config(tmp_path, llm_server)),
            ]
        )
    finally:
        kernel.close()
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()}
    assert lines["run"].startswith("ok") and "running, step 30" in lines["run"]
    assert lines["key"].startswith("ok") and "val/loss (min)" in lines["key"]
    assert lines["memory"].startswith("ok")
    assert "40 tokens in, 6 out, $0.000052 (not charged to a run)" in lines["llm"]
    assert len(llm_server.calls) == 1  # one real call, no more


def test_a_model_without_a_price_fails_with_what_to_add(
    tmp_path: Path, llm_server: Any, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, llm_server, price=False)
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  llm" in out and '[prices."test-model"]' in out
    assert llm_server.calls == []  # a model that is never called is not called here either


def test_a_failing_provider_and_a_missing_key_metric_are_reported(
    tmp_path: Path, llm_server: Any, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    llm_server.script(status(500, "the model is loading"))
    kernel = _live_run(tmp_path / "run")
    config = _config(tmp_path, llm_server, key_metric="val/los")
    try:
        code = main(["--dir", str(tmp_path / "run"), "doctor", "--config", str(config)])
    finally:
        kernel.close()
    out = capsys.readouterr().out
    assert code == 1
    assert "did you mean 'val/loss'?" in out
    assert "FAIL  llm" in out and "the AI modes would fall back to the rules" in out


def test_a_missing_run_directory_fails_and_no_key_only_warns_in_an_ai_mode(
    tmp_path: Path, llm_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, llm_server)
    assert main(["--dir", str(tmp_path / "nowhere"), "doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  run" in out and "does not exist" in out
    assert f"warn  llm         no key in ${KEY_ENV}: the AI modes fall back to the rules" in out
