"""``autopilot init`` writes the commented example, which loads as the defaults; it never
overwrites a file without ``--force``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autopilot.cli import main
from autopilot.config import Settings, load_config


def test_init_writes_a_config_that_loads_as_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "autopilot.toml"
    assert main(["init", str(target)]) == 0
    assert "[memory]" in target.read_text() and "# " in target.read_text()
    assert load_config(target).settings == Settings()
    assert f"wrote {target}" in capsys.readouterr().out


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "autopilot.toml"
    target.write_text('mode = "auto"\n')
    assert main(["init", str(target)]) == 2
    assert "already exists; keep it, or pass --force" in capsys.readouterr().err
    assert target.read_text() == 'mode = "auto"\n'
    assert main(["init", str(target), "--force"]) == 0
    assert load_config(target).settings == Settings()


def test_init_user_writes_where_the_autopilot_looks(tmp_path: Path) -> None:
    assert main(["init", "--user"]) == 0  # XDG_CONFIG_HOME is the test's (conftest)
    written = Path(os.environ["XDG_CONFIG_HOME"]) / "train-autopilot" / "autopilot.toml"
    assert load_config().user_file == written
