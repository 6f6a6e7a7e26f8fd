"""autopilot.toml: the example documents the defaults, and mistakes are one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from _runs import write_run

from autopilot.config import Settings, check_bounds, load_settings
from autopilot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "autopilot" / "autopilot.example.toml"


def test_the_example_file_holds_exactly_the_defaults() -> None:
    assert load_settings(EXAMPLE) == Settings()


def test_the_example_documents_every_section() -> None:
    text = EXAMPLE.read_text()
    for section in Settings.model_fields:
        if section != "mode":
            assert f"[{section}]" in text or f"[{section}." in text, section


def test_a_typo_is_an_error_that_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "autopilot.toml"
    path.write_text("[guards]\ncooldown_step = 5\n")
    with pytest.raises(ConfigError, match="guards.cooldown_step: unknown setting"):
        load_settings(path)


def test_a_cooldown_below_the_minimum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "autopilot.toml"
    path.write_text("[guards]\ncooldown_steps = 5\n")
    with pytest.raises(ConfigError, match="guards.cooldown_steps"):
        load_settings(path)


def test_bad_toml_and_a_missing_file_say_so(tmp_path: Path) -> None:
    path = tmp_path / "autopilot.toml"
    path.write_text("[guards\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_the_run_directory_file_is_found_but_only_tightens(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "autopilot.toml").write_text('mode = "auto"\n[guards]\nmax_up = 1.2\n')
    settings = load_settings(None, tmp_path / "run")
    assert settings.mode == "suggest" and settings.guards.max_up == 1.2
    assert load_settings(None, tmp_path).guards.max_up == 2.0


def test_prices_and_the_key_come_from_the_config(monkeypatch) -> None:
    s = Settings.model_validate(
        tomllib.loads(
            '[llm]\nmodel = "local"\napi_key_env = "MY_KEY"\n'
            "[prices.local]\ninput = 0\noutput = 0\n"
        )
    )
    assert s.price("local") is not None and s.price("unknown-model") is None
    monkeypatch.delenv("MY_KEY", raising=False)
    assert s.api_key() is None
    monkeypatch.setenv("MY_KEY", "k")
    assert s.api_key() == "k"


def test_bounds_for_a_knob_the_run_lacks_are_refused_once_the_kernel_published(
    tmp_path: Path,
) -> None:
    kernel = write_run(tmp_path / "run")  # lr, weight_decay, grad_clip, loss.extra
    check_bounds(Settings.model_validate({"bounds": {"lr": [1e-4, 0.1]}}), kernel)
    check_bounds(Settings.model_validate({"bounds": {"lrr": [1e-4, 0.1]}}), None)  # unknown yet
    with pytest.raises(ConfigError) as err:
        check_bounds(Settings.model_validate({"bounds": {"lrr": [1e-4, 0.1]}}), kernel)
    assert str(err.value) == (
        "bounds.lrr: this run has no knob of that name; its knobs are grad_clip, loss.extra, "
        "lr, weight_decay (fix or remove the [bounds] entry)"
    )
