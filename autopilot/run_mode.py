"""A run's chosen autopilot mode, kept in its run directory (``autopilot/mode.json``).

``autopilot serve`` ticks the runs whose mode is set: by this file (written by the service's
API or ``autopilot --dir D mode MODE``), else by ``serve --mode``, else by a ``mode`` your
own ``autopilot.toml`` sets; a run with none of them is listed, not ticked. The file is a
small JSON document replaced atomically, so every process sharing the run directory sees
the old or the new mode, never half.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> write_run_mode(run, "suggest", set_by="cli").mode
    'suggest'
    >>> resolve_mode(run).source
    'mode.json'
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autopilot.config import Mode, load_config
from autopilot.errors import AutopilotError
from kernel.jsonl import read_json, write_json_atomic
from kernel.state import AUTOPILOT_DIR

logger = logging.getLogger(__name__)

MODE_FILE = "mode.json"
ModeSource = Literal["mode.json", "serve", "config", "unset"]


class RunMode(BaseModel):
    """The document in ``autopilot/mode.json``."""

    model_config = ConfigDict(extra="ignore")

    mode: Mode
    set_by: Literal["api", "cli"]
    set_at: float = Field(ge=0)


@dataclass(frozen=True, kw_only=True)
class ResolvedMode:
    """The mode a run is ticked in (``None``: not ticked) and what set it."""

    mode: Mode | None
    source: ModeSource


def mode_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / AUTOPILOT_DIR / MODE_FILE


def read_run_mode(run_dir: str | os.PathLike[str]) -> RunMode | None:
    """The run's ``mode.json``; ``None`` when there is none, or it cannot be read (logged:
    a file another tool garbled does not start an autopilot)."""
    path = mode_path(run_dir)
    try:
        raw = read_json(path)
        return None if raw is None else RunMode.model_validate(raw)
    except (ValueError, ValidationError, OSError) as exc:
        logger.warning("%s ignored: it does not hold a mode (%s)", path, str(exc)[:200])
        return None


def write_run_mode(
    run_dir: str | os.PathLike[str], mode: Mode | None, *, set_by: Literal["api", "cli"]
) -> RunMode | None:
    """Set the run's mode (``None``: unset it, the file is removed); the document written.

    Raises:
        AutopilotError: the run directory does not exist.
    """
    path = mode_path(run_dir)
    if not Path(run_dir).is_dir():
        raise AutopilotError(f"run directory {run_dir} does not exist")
    if mode is None:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(exist_ok=True)
    doc = RunMode(mode=mode, set_by=set_by, set_at=time.time())
    write_json_atomic(path, doc.model_dump(mode="json"))
    return doc


def resolve_mode(
    run_dir: str | os.PathLike[str], default: Mode | None = None, config: str | None = None
) -> ResolvedMode:
    """The mode ``autopilot serve`` ticks the run in: ``mode.json``, else ``default``
    (``serve --mode``), else a ``mode`` the user's config file sets explicitly."""
    found = read_run_mode(run_dir)
    if found is not None:
        return ResolvedMode(mode=found.mode, source="mode.json")
    if default is not None:
        return ResolvedMode(mode=default, source="serve")
    try:
        loaded = load_config(config, run_dir)
    except AutopilotError:
        return ResolvedMode(mode=None, source="unset")
    if "mode" in loaded.sources:
        return ResolvedMode(mode=loaded.settings.mode, source="config")
    return ResolvedMode(mode=None, source="unset")
