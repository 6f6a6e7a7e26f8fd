"""Freeze modes and recipe replay inside the kernel.

``freeze.json`` (written by the CLI) says whether outside knob changes are ignored (``prod``)
or a recipe is replayed (``replay``). ``RecipePlayer`` reloads it when it changes and, in
replay mode, sets each recipe entry's knob once its step is reached. Entries are recorded in
the ledger under ids derived from the recipe's path, so a restarted kernel skips the ones it
already replayed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

from kernel._executor import CommandExecutor
from kernel.errors import KernelError
from kernel.freeze import FREEZE_FILE, FreezeState, RecipeEntry, load_recipe, read_freeze
from kernel.state import FreezeMode

logger = logging.getLogger(__name__)


class RecipePlayer:
    """Keeps the executor's freeze mode in step with ``freeze.json`` and replays recipes."""

    def __init__(self, run_dir: Path, executor: CommandExecutor) -> None:
        self.run_dir, self.executor = run_dir, executor
        self.next_step: float = math.inf
        """The step of the next recipe entry (infinite when none): the hot path's test."""
        self._stamp: tuple[int, int] | None = None
        self._recipe: list[RecipeEntry] = []
        self._pos = 0
        self._tag = ""

    def refresh(self) -> bool:
        """Reload ``freeze.json`` if it changed; return whether it did."""
        try:
            st = os.stat(self.run_dir / FREEZE_FILE)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            freeze = read_freeze(self.run_dir)
        except KernelError as exc:
            logger.error("%s; keeping freeze mode %s", exc, self.executor.freeze)
            return False
        self.install(freeze.mode, *self._load(freeze))
        return True

    def _load(self, freeze: FreezeState) -> tuple[str, list[RecipeEntry]]:
        if freeze.mode != "replay" or freeze.recipe is None:
            return "", []
        try:
            entries = load_recipe(freeze.recipe)
        except KernelError as exc:
            logger.error("replay recipe unusable, nothing will be replayed: %s", exc)
            return "", []
        logger.info("replaying %d recipe entries from %s", len(entries), freeze.recipe)
        return hashlib.sha1(freeze.recipe.encode()).hexdigest()[:8], entries

    def install(self, mode: FreezeMode, tag: str, recipe: list[Any]) -> None:
        """Take freeze mode ``mode`` and the recipe ``recipe`` (entries or their dicts)."""
        self.executor.freeze = mode
        self._tag = tag
        self._recipe = [RecipeEntry.model_validate(e) for e in recipe]
        self._pos = 0
        handled = self.executor.ledger.handled_ids
        while self._pos < len(self._recipe) and self._replay_id(self._pos) in handled:
            self._pos += 1
        self._update_next()

    def payload(self) -> dict[str, Any]:
        """The freeze mode and recipe as plain data (to hand to another rank)."""
        return {
            "mode": self.executor.freeze,
            "tag": self._tag,
            "recipe": [e.model_dump(mode="json") for e in self._recipe],
        }

    def play(self, step: int) -> None:
        """Replay every entry due at ``step``."""
        while self._pos < len(self._recipe) and self._recipe[self._pos].step <= step:
            entry = self._recipe[self._pos]
            self.executor.replay(step, entry, self._replay_id(self._pos))
            self._pos += 1
        self._update_next()

    def _replay_id(self, index: int) -> str:
        return f"replay-{self._tag}-{index}"

    def _update_next(self) -> None:
        left = self._pos < len(self._recipe)
        self.next_step = self._recipe[self._pos].step if left else math.inf
