"""Freeze modes (``freeze.json``) and recipes (``recipe.jsonl``).

* ``off``: commands are applied.
* ``prod``: knob changes and rewinds from outside are ignored and recorded as
  ``ignored_freeze``; run operations (``stop``, ``pause``, ``resume``, ``checkpoint``) still
  work.
* ``replay``: the recipe is applied at its recorded steps; every other knob change, and
  every rewind, is ignored and recorded as such.

A recipe is the portable form of a run's knob history: one line per applied change, with the
step and the absolute value after it. Replaying it in a run with the same starting
configuration reproduces the knob values step by step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from kernel.commands import KnobValue
from kernel.errors import RunDirError
from kernel.jsonl import write_json_atomic
from kernel.ledger import read_ledger
from kernel.regular_files import read_regular
from kernel.state import FreezeMode
from kernel.validation import summarize_validation_error

FREEZE_FILE = "freeze.json"
FREEZE_LIMIT = 64 * 1024
"""The largest ``freeze.json`` read: the CLI writes about 100 bytes."""
RECIPE_LIMIT = 16 * 1024 * 1024
"""The largest recipe read (about 150,000 entries): the kernel reads it between two steps."""


class FreezeState(BaseModel):
    mode: FreezeMode = "off"
    recipe: str | None = None
    since: float = Field(default_factory=time.time)


class RecipeEntry(BaseModel):
    step: int = Field(ge=0)
    knob: str
    value: KnobValue
    command_id: str | None = None
    source: str | None = None


def read_freeze(run_dir: str | os.PathLike[str]) -> FreezeState:
    """The run's freeze state (``off`` when there is no ``freeze.json``)."""
    path = Path(run_dir) / FREEZE_FILE
    try:
        data = read_regular(path, limit=FREEZE_LIMIT)
    except FileNotFoundError:
        return FreezeState()
    except RunDirError as exc:
        raise RunDirError(f"{exc}; rewrite it with `autopilot --dir D freeze off`") from None
    try:
        return FreezeState.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        raise RunDirError(
            f"{path} is not a valid freeze file ({exc}); "
            "rewrite it with `autopilot --dir D freeze off`"
        ) from None


def write_freeze(
    run_dir: str | os.PathLike[str], mode: FreezeMode, recipe: str | os.PathLike[str] | None = None
) -> FreezeState:
    """Set the run's freeze mode; ``replay`` needs a readable recipe file."""
    if mode == "replay":
        if recipe is None:
            raise RunDirError("freeze replay needs a recipe: pass --recipe FILE")
        recipe = os.path.abspath(recipe)
        load_recipe(recipe)  # fail now, not inside the training process
    elif recipe is not None:
        raise RunDirError(f"a recipe only makes sense with freeze replay, not {mode}")
    state = FreezeState(mode=mode, recipe=None if recipe is None else str(recipe))
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # freezing before the run starts is fine
    write_json_atomic(Path(run_dir) / FREEZE_FILE, state.model_dump(mode="json"))
    return state


def load_recipe(path: str | os.PathLike[str]) -> list[RecipeEntry]:
    """Read a recipe file, sorted by step: a regular file of at most ``RECIPE_LIMIT`` bytes
    (a FIFO or a device is refused, never waited on)."""
    try:
        data = read_regular(path, limit=RECIPE_LIMIT)
    except FileNotFoundError as exc:
        raise RunDirError(f"cannot read recipe {path}: {exc.strerror}") from None
    lines = data.decode("utf-8", errors="replace").split("\n")  # not splitlines: U+2028 is text
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(RecipeEntry.model_validate_json(line))
        except ValidationError as exc:
            msg = summarize_validation_error(exc, limit=1)
            raise RunDirError(f"{path}:{n} is not a recipe entry: {msg}") from None
    return sorted(entries, key=lambda e: e.step)


def export_recipe(run_dir: str | os.PathLike[str]) -> list[RecipeEntry]:
    """The recipe of a run: every applied knob change in its ledger, in order."""
    return [
        RecipeEntry(
            step=row.step,
            knob=row.knob,
            value=row.after,
            command_id=row.command_id,
            source=row.source,
        )
        for row in read_ledger(run_dir)
        if row.decision == "applied"
        and row.op == "set"
        and row.step is not None
        and row.knob is not None
        and row.after is not None
    ]


def write_recipe(entries: list[RecipeEntry], out: str | os.PathLike[str]) -> None:
    Path(out).write_text(
        "".join(e.model_dump_json(exclude_none=True) + "\n" for e in entries), encoding="utf-8"
    )
