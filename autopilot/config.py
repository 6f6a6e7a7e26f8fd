"""The autopilot's settings: one typed object loaded from ``autopilot.toml``.

Every field has a default, so a missing file means "the defaults". Unknown keys are errors
(a typo must not silently turn a guard off). ``autopilot.example.toml`` at the repository
root documents each field.

Example:
    >>> s = Settings.model_validate({"guards": {"max_actions": 1}})
    >>> s.guards.max_actions, s.guards.cooldown_steps
    (1, 50)
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autopilot.errors import ConfigError
from kernel.knobs import knob_family
from kernel.state import KernelState
from kernel.validation import summarize_validation_error

Mode = Literal["off", "suggest", "auto", "ai_suggest", "ai_auto"]
MODES: tuple[Mode, ...] = get_args(Mode)
AI_MODES = ("ai_suggest", "ai_auto")
"""Modes whose proposals come from the LLM agents (the rules when those cannot be used)."""
SUGGEST_MODES = ("suggest", "ai_suggest")
"""Modes whose proposals go to the review queue."""
AUTO_MODES = ("auto", "ai_auto")
"""Modes whose proposals go to the kernel (and whose harmful changes are rolled back)."""
CONFIG_FILE = "autopilot.toml"
ENV_CONFIG = "AUTOPILOT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LLMSettings(_Section):
    """Which OpenAI-compatible provider to call, and how."""

    base_url: str | None = None
    """``None``: the ``openai`` client's default (``$OPENAI_BASE_URL`` or api.openai.com)."""
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    """The name of the environment variable that holds the key (never the key itself)."""
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=1, ge=0, le=5)
    max_output_tokens: int = Field(default=600, ge=50, le=16000)
    temperature: float = Field(default=0.0, ge=0, le=2)
    response_format: Literal["auto", "json_schema", "json_object"] = "auto"
    """``auto`` asks for a JSON schema and falls back to JSON mode if the provider refuses."""


class Price(_Section):
    """USD per one million tokens."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    output: float = Field(ge=0)


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
}


class BudgetSettings(_Section):
    """Caps on LLM spend. A call that could exceed a cap is not made."""

    per_run_usd: float = Field(default=1.0, ge=0)
    per_day_usd: float = Field(default=5.0, ge=0)
    day_ledger: str | None = None
    """Where spend across runs is kept for the per-day cap (default: the user's state dir)."""
    min_steps_between_calls: int = Field(default=100, ge=0)

    def day_ledger_path(self) -> Path:
        if self.day_ledger:
            return Path(self.day_ledger).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return Path(base) / "train-autopilot" / "spend.jsonl"


class CadenceSettings(_Section):
    """When the autopilot looks at the run."""

    poll_interval_s: float = Field(default=0.25, gt=0)
    tick_every_steps: int = Field(default=10, ge=1)
    """A tick runs once at least this many new steps have been logged."""
    repeat_after_steps: int = Field(default=100, ge=1)
    """The same diagnosis is decided again only after this many steps."""


class GuardSettings(_Section):
    """Hard limits on what any policy may change."""

    cooldown_steps: int = Field(default=50, ge=10)
    """Steps after a change to a knob before the autopilot may change it again."""
    global_cooldown_steps: int = Field(default=20, ge=10)
    """Steps after any autopilot change before the next one."""
    max_actions: int = Field(default=2, ge=1)
    max_up: float = Field(default=2.0, ge=1.0)
    """Largest factor by which one action may raise a knob."""
    max_down: float = Field(default=0.1, gt=0.0, le=1.0)
    """Smallest factor to which one action may lower a knob."""
    max_total_down: float = Field(default=0.1, gt=0.0, le=1.0)
    """Smallest factor to which the autopilot's changes may lower a knob family in total
    within ``total_window_steps`` (from its value before the first of them), unless one
    was measured better or a person set the knob since."""
    max_total_up: float = Field(default=10.0, ge=1.0)
    """Largest factor by which they may raise it in total, likewise."""
    total_window_steps: int = Field(default=5000, ge=1)
    """How far back the cumulative guard counts the autopilot's changes."""
    noop_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """A proposal with lower confidence becomes a no-op."""


class DetectorSettings(_Section):
    """Thresholds of the detectors; the key metric and its direction."""

    key_metric: str | None = None
    """``None``: the kernel's key metric, else one inferred from the names logged
    (``kernel.metric_names.infer_key_metric``: a validation loss first)."""
    key_mode: Literal["min", "max"] | None = None
    """``None``: the kernel's, else inferred from the name (acc, f1, auc... are maximised)."""
    key_metric_grace_steps: int = Field(default=500, ge=0)
    """How long a declared key metric may stay unlogged before the autopilot warns and
    judges the run by the inferred one instead (keep it above the validation interval).
    With none declared, how long it waits for a validation metric before judging by a
    training loss."""
    window: int = Field(default=200, ge=20, le=5000)
    """How many recent points of each metric the autopilot keeps."""
    min_points: int = Field(default=5, ge=3)
    plateau_patience_steps: int = Field(default=300, ge=10)
    plateau_rel: float = Field(default=0.01, ge=0)
    divergence_factor: float = Field(default=2.0, gt=1.0)
    grad_explosion_factor: float = Field(default=10.0, gt=1.0)
    overfit_patience_steps: int = Field(default=200, ge=10)
    overfit_rel: float = Field(default=0.05, ge=0)
    oscillation_volatility: float = Field(default=0.2, gt=0)


class EvaluateSettings(_Section):
    """How the effect of an applied change is measured and when it is undone."""

    horizon_steps: int = Field(default=100, ge=10)
    worse_rel: float = Field(default=0.10, gt=0)
    """Rolled back (auto modes) when the key metric is this much worse than projected."""
    better_rel: float = Field(default=0.02, ge=0)


class ReviewSettings(_Section):
    expire_after_steps: int = Field(default=500, ge=1)


class Settings(_Section):
    """Everything in ``autopilot.toml``."""

    mode: Mode = "suggest"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    prices: dict[str, Price] = Field(default_factory=dict)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    cadence: CadenceSettings = Field(default_factory=CadenceSettings)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Tighter bounds per knob than the kernel's, e.g. ``lr = [1e-6, 0.1]``."""
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        for knob, (lo, hi) in self.bounds.items():
            if not lo <= hi:
                raise ValueError(f"bounds.{knob}: lo must be <= hi, got [{lo}, {hi}]")
        return self

    def price(self, model: str) -> Price | None:
        """The price of ``model``: the config's table first, then the built-in one."""
        return self.prices.get(model) or DEFAULT_PRICES.get(model)

    def api_key(self) -> str | None:
        """The key from the environment variable the config names, or ``None``."""
        return os.environ.get(self.llm.api_key_env) or None


def check_bounds(settings: Settings, kernel: KernelState | None) -> None:
    """Refuse a ``[bounds]`` entry for a knob the run does not have, once the kernel has
    published its knobs (before that, nothing is known; a bound on a family, ``lr``, covers
    its per-group knobs, ``lr[1]``).

    Raises:
        ConfigError: naming the unknown entry and the run's knobs.
    """
    if kernel is None or not settings.bounds:
        return
    names = {spec.name for spec in kernel.knobs}
    known = names | {knob_family(n) for n in names}
    unknown = sorted(k for k in settings.bounds if k not in known)
    if unknown:
        listed = ", ".join(sorted(names)) or "none"
        raise ConfigError(
            f"bounds.{unknown[0]}: this run has no knob of that name; its knobs are {listed} "
            "(fix or remove the [bounds] entry)"
        )


def load_settings(
    path: str | os.PathLike[str] | None = None, run_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """Settings from ``path``, else ``$AUTOPILOT_CONFIG``, else ``RUN_DIR/autopilot.toml``,
    else ``./autopilot.toml``, else the defaults.

    Raises:
        ConfigError: when the file is missing (given explicitly), not TOML, or invalid.
    """
    chosen = _find(path, run_dir)
    if chosen is None:
        return Settings()
    try:
        raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {chosen} does not exist; check --config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen} is not valid TOML: {exc}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{chosen}: {summarize_validation_error(exc, types=_UNKNOWN_SETTING)}"
        ) from None


def _find(
    path: str | os.PathLike[str] | None, run_dir: str | os.PathLike[str] | None
) -> Path | None:
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    for candidate in ([Path(run_dir) / CONFIG_FILE] if run_dir else []) + [Path(CONFIG_FILE)]:
        if candidate.is_file():
            return candidate
    return None


_UNKNOWN_SETTING = {
    "extra_forbidden": "unknown setting (see autopilot.example.toml for the valid ones)"
}
