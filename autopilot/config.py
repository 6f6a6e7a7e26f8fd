"""The autopilot's settings: one typed object loaded from ``autopilot.toml``.

Every field has a default, so a missing file means "the defaults". Unknown keys are errors
(a typo must not silently turn a guard off). ``autopilot/autopilot.example.toml``, which
``autopilot init`` writes, documents each field. The settings come from the user's own file
(``load_config``); a run directory's ``autopilot.toml`` may only tighten them
(``autopilot._config_trust``).

Example:
    >>> s = Settings.model_validate({"guards": {"max_actions": 1}})
    >>> s.guards.max_actions, s.guards.cooldown_steps
    (1, 50)
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autopilot._config_trust import MAX_BYTES, tighten
from autopilot.errors import ConfigError
from kernel.errors import RunDirError
from kernel.knobs import knob_family
from kernel.regular_files import read_regular
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

logger = logging.getLogger(__name__)


def state_home() -> Path:
    """The user's state directory for train-autopilot (``$XDG_STATE_HOME`` or
    ``~/.local/state``, then ``train-autopilot``): the day's spend and the memory store."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "train-autopilot"


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
        return state_home() / "spend.jsonl"


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
    plateau_patience_steps: int = Field(default=250, ge=10)
    """Plateau patience of a run of unknown length (no ``max_steps``)."""
    plateau_patience_evals: int = Field(default=4, ge=1)
    """The fewest evaluations of the key metric a plateau's patience window holds."""
    plateau_patience_frac: float = Field(default=0.2, gt=0, le=1)
    """Plateau patience as a fraction of a run of known length."""
    plateau_rel: float = Field(default=0.01, ge=0)
    """The relative improvement per patience window that counts as progress."""
    anneal_frac: float = Field(default=0.5, gt=0, le=1)
    """An lr decayed gradually below this fraction of its peak is a schedule annealing it."""
    plateau_still_high: float = Field(default=0.5, ge=0)
    """Under an annealing lr, a flat tail is a plateau only while the training loss is at
    least this fraction of its early level."""
    divergence_factor: float = Field(default=2.0, gt=1.0)
    divergence_scale_rel: float = Field(default=0.05, ge=0)
    """A loss jump must also exceed this fraction of the loss's early level (a fine-tune's
    loss near 0.001 rising to 0.04 is x40 its best, and nothing on its own scale)."""
    grad_explosion_factor: float = Field(default=10.0, gt=1.0)
    imbalance_share: float = Field(default=0.5, gt=0, lt=1)
    """A weighted loss term (``train/loss/<term>``, weight ``loss.<term>``) above this share
    of ``train/loss`` over its latest points dominates it (an ``imbalance``)."""
    overfit_patience_steps: int = Field(default=200, ge=10)
    """Overfitting patience of a run of unknown length (no ``max_steps``)."""
    overfit_patience_evals: int = Field(default=2, ge=1)
    """How many evaluations must follow the validation best."""
    overfit_patience_frac: float = Field(default=0.02, gt=0, le=1)
    """How old the validation best must be, as a fraction of a run of known length."""
    overfit_rel: float = Field(default=0.08, ge=0)
    overfit_rel_improving: float = Field(default=0.15, ge=0)
    """``overfit_rel`` while a paired accuracy-style metric still sets bests."""
    oscillation_volatility: float = Field(default=0.2, gt=0)


class EvaluateSettings(_Section):
    """How the effect of an applied change is measured and when it is undone."""

    horizon_steps: int = Field(default=100, ge=10)
    worse_rel: float = Field(default=0.10, gt=0)
    """Rolled back (auto modes) when the key metric is this much worse than projected."""
    better_rel: float = Field(default=0.02, ge=0)


class ReviewSettings(_Section):
    expire_after_steps: int = Field(default=500, ge=1)


ENV_MEMORY_URL = "AUTOPILOT_MEMORY_URL"
"""The environment variable that points every autopilot of a user at one memory store."""


class MemorySettings(_Section):
    """The store of what earlier runs learned (``memory.store``)."""

    enabled: bool = True
    """Write each run's record and interventions, and read them back as priors. Off: a
    run neither learns nor is steered by earlier runs (``status`` says so)."""
    url: str | None = None
    """``sqlite:///PATH`` (or a path) or ``postgresql://...``. Unset: ``$AUTOPILOT_MEMORY_URL``,
    else one SQLite file in the user's state directory."""
    task: str | None = Field(default=None, max_length=200)
    """A name for the task, when the script gives none (``Kernel(task=...)`` wins)."""
    prompt_tokens: int = Field(default=120, ge=0, le=1000)
    """At most this many prompt tokens of memory in an LLM decision."""

    def store_url(self) -> str:
        """Where the store is: ``url``, else the environment's, else the default file."""
        if self.url:
            return self.url
        env = os.environ.get(ENV_MEMORY_URL)
        if env:
            return env
        return f"sqlite:///{state_home() / 'memory.sqlite'}"


class TuneSettings(_Section):
    """The online tuner (``tune`` proposer): Optuna TPE over multiplicative changes of live
    knobs inside one run, its study kept in the memory store."""

    enabled: bool = False
    """Off: the rules (or the LLM in AI modes) propose. On: the tuner proposes while the run
    is healthy or stalled, and the rules still answer a divergence."""
    knobs: list[str] = Field(default_factory=lambda: ["lr"], min_length=1, max_length=4)
    """The knobs it mutates (each by a factor it learns); a knob the run lacks is skipped."""
    max_factor: float = Field(default=4.0, gt=1.0, le=100.0)
    """One trial moves a knob by a factor within ``[1/max_factor, max_factor]`` (and within
    ``guards.max_down``/``max_up``, so the guards never have to clamp its proposal)."""
    segment_steps: int | None = Field(default=None, ge=10)
    """Steps from one trial's change to the next trial's; ``None``: ``evaluate.horizon_steps``
    (a trial is judged over that horizon, so a shorter segment waits for it anyway)."""
    patience: int = Field(default=1, ge=1, le=1000)
    """After this many trials in a row were undone, a healthy run is left alone (a plateau
    or an oscillation is still tuned); a kept trial resets the count."""
    n_startup_trials: int = Field(default=2, ge=0, le=100)
    """Random trials before TPE models the scores (counted over the task's stored study):
    one run has room for a handful of segments, so TPE takes over early."""
    seed: int | None = 0
    """The sampler's seed (``None``: a fresh one per process)."""


class NotifySettings(_Section):
    """Notifications to a Slack-compatible webhook (``autopilot.notify``); from the user's
    own config only, a run directory's may not set them."""

    webhook_url: str | None = None
    """Where the JSON is posted (``None``: no notifications)."""
    min_interval_s: float = Field(default=60.0, ge=0)
    """At most one notification of each kind per this many seconds."""
    max_per_run: int = Field(default=100, ge=1)
    """At most this many notifications per run (per autopilot process)."""
    fallbacks_in_a_row: int = Field(default=3, ge=1)
    """Notify when this many decisions in a row fell back from the LLM to the rules."""
    timeout_s: float = Field(default=5.0, gt=0, le=60)


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
    memory: MemorySettings = Field(default_factory=MemorySettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

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


@dataclass(frozen=True, kw_only=True)
class LoadedSettings:
    """Settings with where each came from.

    ``sources`` maps a dotted setting (``guards.max_up``, ``bounds.lr``) to the file that
    set it; a setting absent from it has its default. ``ignored`` maps each setting of the
    run directory's file that was not applied (or ``"*"``: the whole file) to a message
    saying why (each also logged as a warning)."""

    settings: Settings
    sources: dict[str, str]
    ignored: dict[str, str] = field(default_factory=dict)
    user_file: Path | None = None
    run_file: Path | None = None

    def describe(self) -> list[str]:
        """Lines saying which file set which settings, and what the run directory's file
        tried to set and was refused (``autopilot status`` prints them)."""
        by_file: dict[str, list[str]] = {}
        for name, source in self.sources.items():
            by_file.setdefault(source, []).append(name)
        lines = [f"yours: {self.user_file}" if self.user_file else "yours: none (defaults)"]
        lines += [f"{source} sets {', '.join(names)}" for source, names in by_file.items()]
        if self.ignored:
            refused = ", ".join(sorted(self.ignored))
            lines.append(f"{self.run_file} ignored (a run directory may only tighten): {refused}")
        return lines


def load_settings(
    path: str | os.PathLike[str] | None = None, run_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """The settings of ``load_config(path, run_dir)``."""
    return load_config(path, run_dir).settings


def load_config(
    path: str | os.PathLike[str] | None = None, run_dir: str | os.PathLike[str] | None = None
) -> LoadedSettings:
    """The user's settings, tightened by the run directory's ``autopilot.toml``.

    The user's own file is the first of: ``path`` (``--config``), ``$AUTOPILOT_CONFIG``,
    ``./autopilot.toml`` (unless that is the run directory's file), and
    ``user_config_path()``; none means the defaults. ``RUN_DIR/autopilot.toml`` is not
    trusted (a run directory is often writable by others): it may only make the autopilot
    more cautious (``autopilot._config_trust``); every other setting in it is ignored with
    a warning naming the setting and the file, and a file that cannot be read is ignored.

    Raises:
        ConfigError: when the user's file is missing (given explicitly), not TOML, or invalid.
    """
    run_file = Path(run_dir) / CONFIG_FILE if run_dir is not None else None
    chosen = _find(path, run_file)
    raw = _read_toml(chosen) if chosen is not None else {}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{chosen}: {summarize_validation_error(exc, types=_UNKNOWN_SETTING)}"
        ) from None
    sources = {name: str(chosen) for name in _leaves(raw)}
    if run_file is None or chosen is not None and _same_file(chosen, run_file):
        return LoadedSettings(settings=settings, sources=sources, user_file=chosen)
    ignored: dict[str, str] = {}
    if os.path.lexists(run_file):
        settings, ignored = _tighten_with(settings, run_file, sources)
    return LoadedSettings(
        settings=settings,
        sources=sources,
        ignored=ignored,
        user_file=chosen,
        run_file=run_file if os.path.lexists(run_file) else None,
    )


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/train-autopilot/autopilot.toml`` (default ``~/.config/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "train-autopilot" / CONFIG_FILE


def _tighten_with(
    settings: Settings, run_file: Path, sources: dict[str, str]
) -> tuple[Settings, dict[str, str]]:
    try:
        raw = tomllib.loads(read_regular(run_file, limit=MAX_BYTES).decode("utf-8"))
    except (OSError, RunDirError, UnicodeDecodeError) as exc:
        problem = f"{run_file}: ignored, it cannot be read ({exc})"
    except tomllib.TOMLDecodeError as exc:
        problem = f"{run_file}: ignored, it is not valid TOML ({exc})"
    else:
        merged, applied, ignored = tighten(
            settings, raw, str(run_file), user_config=str(user_config_path())
        )
        sources.update(applied)
        return merged, ignored
    logger.warning("%s", problem)
    return settings, {"*": problem}


def _read_toml(chosen: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {chosen} does not exist; check --config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen} is not valid TOML: {exc}") from None


def _leaves(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names a TOML table sets (``prices.<model>`` and ``bounds.<knob>`` whole)."""
    names = []
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and prefix.count(".") < 1 and key != "prices":
            names += _leaves(value, f"{name}.")
        elif isinstance(value, dict):
            names += [f"{name}.{k}" for k in value]
        else:
            names.append(name)
    return names


def _find(path: str | os.PathLike[str] | None, run_file: Path | None) -> Path | None:
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    here = Path.cwd() / CONFIG_FILE
    if here.is_file() and not (run_file is not None and _same_file(here, run_file)):
        return here
    mine = user_config_path()
    return mine if mine.is_file() else None


def _same_file(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


_UNKNOWN_SETTING = {
    "extra_forbidden": "unknown setting (`autopilot init` writes a file with every valid one)"
}
