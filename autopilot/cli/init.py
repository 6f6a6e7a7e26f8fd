"""``autopilot init``: write a commented ``autopilot.toml`` with every setting at its default
(``autopilot/autopilot.example.toml``), where the autopilot will find it."""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from autopilot.cli._common import CliError
from autopilot.config import CONFIG_FILE, user_config_path

EXAMPLE = "autopilot.example.toml"


def example_text() -> str:
    """The commented example config shipped with the package."""
    return files("autopilot").joinpath(EXAMPLE).read_text(encoding="utf-8")


def cmd_init(args: argparse.Namespace) -> int:
    """Write the example to ``PATH`` (``./autopilot.toml``; ``--user``: your config dir)."""
    if args.user and args.path:
        raise CliError("give a PATH or --user, not both")
    path = user_config_path() if args.user else Path(args.path or CONFIG_FILE)
    if path.is_dir():
        path = path / CONFIG_FILE
    if path.exists() and not args.force:
        raise CliError(f"{path} already exists; keep it, or pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example_text(), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc}", code=1) from None
    print(f"wrote {path}: every setting at its default, commented; edit what you need")
    if not args.user:
        print(
            "the autopilot reads it when run from this directory (or give --config "
            f"{path}); `autopilot doctor` checks it"
        )
    return 0
