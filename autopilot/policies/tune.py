"""The online tuner's policy: Optuna TPE over bounded multiplicative changes of live knobs.

A trial is one segment of the run: the tuner asks TPE for a factor per knob, the guards and
the kernel apply ``knob x factor`` at a safe point, and the effect the autopilot measures
over its horizon against the projected trend (``autopilot.evaluate``: ``change_rel``,
positive when better) is the trial's value (direction maximize). The tune node
(``autopilot.tune_node``) drives the segments; this module only asks and tells.

Each knob's factor is searched as ``<knob>_log2_factor`` in ``[-r, r]`` with ``2^r =
min(tune.max_factor, guards.max_up, 1/guards.max_down)`` (x0.5 to x2 by default): symmetric,
so the random start-up trials raise as often as they cut, and never past the per-step
guard, so the value TPE learns belongs to the factor it suggested. What else the guards
would change (a knob's bounds or the cumulative cap clamp it; a diagnosis forbids its
direction) is handled by ``replace``: the asked trial fails with the reason and a new trial,
enqueued with the factor the guards allow, takes its place (``autopilot.tune_node``).

A factor is relative to the knob's value when it is asked, so what TPE learns is which move
pays from where the run is ("halve the lr" rather than "lr = 1e-3"): a kept change moves the
run, and the next trial is asked from there. The study is per task (``memory.tuner``), so
the next run of the task starts with the moves its earlier runs measured.

Example:
    >>> import tempfile
    >>> from memory.tuner import open_study
    >>> stored = open_study(tempfile.mkdtemp() + "/m.sqlite", "tune-demo-lr", seed=0)
    >>> policy = TunePolicy(stored, knobs=["lr"], run_id="run-1")
    >>> asked = policy.ask({"lr": 0.1})
    >>> 0.5 <= asked.factors["lr"] <= 2.0, asked.proposal.proposer, asked.proposal.trial
    (True, 'tune', 0)
    >>> policy.tell(asked.trial, 0.05)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.config import Settings
from autopilot.policies._base import PolicyContext
from autopilot.proposals import Action, Proposal
from kernel import KernelState, KnobValue
from memory.records import TaskFingerprint
from memory.tuner import RUN_ID, StoredStudy, StudySummary, open_study, study_name, summarize

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

PARAM_SUFFIX = "_log2_factor"


def param_name(knob: str) -> str:
    """The study's parameter of ``knob``: ``lr`` -> ``lr_log2_factor``."""
    return knob + PARAM_SUFFIX


@dataclass(frozen=True, kw_only=True)
class Asked:
    """A trial asked: its number, each knob's factor, and the proposal that applies them."""

    trial: int
    factors: dict[str, float]
    proposal: Proposal


class TunePolicy:
    """Asks and tells trials of one study for one run.

    Args:
        stored: the task's study (``memory.tuner.open_study``).
        knobs: the knobs to mutate; those the run does not have are left out of a trial.
        max_factor: one trial moves a knob by at most this factor either way.
        max_up: ``guards.max_up`` (the search never goes past it).
        max_down: ``guards.max_down``.
        run_id: names the run on each trial (``user_attrs["run_id"]``).

    Raises:
        ValueError: for a factor range that is empty or knobs that are not names.
    """

    name = "tune"

    def __init__(
        self,
        stored: StoredStudy,
        *,
        knobs: Sequence[str],
        max_factor: float = 4.0,
        max_up: float = 2.0,
        max_down: float = 0.1,
        run_id: str = "",
    ) -> None:
        if not knobs or any(not isinstance(k, str) or not k for k in knobs):
            raise ValueError(f"knobs must be a non-empty list of knob names, got {knobs!r}")
        if not max_factor > 1.0:
            raise ValueError(f"max_factor must be > 1, got {max_factor}")
        reach = min(math.log2(max_factor), math.log2(max_up), -math.log2(max_down))
        if not reach > 0:
            raise ValueError(
                f"the factor range must hold 1 on both sides, got [2^-{reach:g}, 2^{reach:g}] "
                f"(max_factor={max_factor}, guards.max_down={max_down}, max_up={max_up})"
            )
        self.stored, self.knobs, self.run_id = stored, list(knobs), run_id
        self.log2_range = (-reach, reach)

    @property
    def study(self) -> optuna.Study:
        return self.stored.study

    def distributions(self, knobs: Sequence[str]) -> dict[str, Any]:
        """The search space over ``knobs``: one log2-factor each, the same in every trial."""
        from optuna.distributions import FloatDistribution

        lo, hi = self.log2_range
        return {param_name(k): FloatDistribution(lo, hi) for k in knobs}

    def ask(self, values: Mapping[str, KnobValue], *, reason: str = "") -> Asked:
        """A new trial over the configured knobs present in ``values`` (knob -> current
        value); its proposal multiplies each by the trial's factor.

        Raises:
            ValueError: when none of the knobs is in ``values``.
        """
        present = [k for k in self.knobs if k in values]
        if not present:
            raise ValueError(
                f"tune.knobs {self.knobs} names none of the run's knobs ({', '.join(values)})"
            )
        trial = self.study.ask(self.distributions(present))
        trial.set_user_attr(RUN_ID, self.run_id)
        factors = {k: 2.0 ** float(trial.params[param_name(k)]) for k in present}
        return Asked(
            trial=trial.number,
            factors=factors,
            proposal=self._proposal(trial.number, factors, values, reason),
        )

    def propose(self, ctx: PolicyContext) -> Proposal:
        """The policies' interface (``RulePolicy.propose``): a new trial over ``ctx``'s knobs;
        its number is the proposal's ``trial``, to be told once measured."""
        kinds = ", ".join(d.kind for d in ctx.diagnoses)
        values = {name: spec.value for name, spec in ctx.knobs.items()}
        return self.ask(values, reason=f"answers {kinds}" if kinds else "").proposal

    def replace(self, trial: int, factors: Mapping[str, float], *, why: str) -> Asked:
        """Fail ``trial`` (the guards clamped it to ``factors``) and ask one enqueued with
        ``factors``, so the value told is the one of the change that was applied."""
        lo, hi = self.log2_range
        params = {param_name(k): min(max(math.log2(f), lo), hi) for k, f in factors.items()}
        self.study.enqueue_trial(params, user_attrs={"replaces": trial})
        self.stored.fail(trial, f"replaced by the factors the guards allowed: {why}")
        asked = self.study.ask(self.distributions(list(factors)))
        asked.set_user_attr(RUN_ID, self.run_id)
        applied = {k: 2.0 ** float(asked.params[param_name(k)]) for k in factors}
        return Asked(
            trial=asked.number,
            factors=applied,
            proposal=self._proposal(asked.number, applied, {}, f"replaces trial {trial}: {why}"),
        )

    def tell(self, trial: int, value: float, **attrs: Any) -> None:
        """Complete ``trial`` with its measured ``value`` (user attributes first)."""
        for key, item in attrs.items():
            self.stored.set_user_attr(trial, key, item)
        self.study.tell(trial, float(value))

    def fail(self, trial: int, reason: str) -> bool:
        """Fail ``trial`` with ``reason`` (it was never measured); whether it still ran."""
        failed = self.stored.fail(trial, reason)
        if failed:
            logger.warning("tuner trial %d failed: %s", trial, reason)
        return failed

    def summary(self) -> StudySummary:
        return summarize(self.stored)

    @staticmethod
    def _proposal(
        trial: int, factors: Mapping[str, float], values: Mapping[str, KnobValue], reason: str
    ) -> Proposal:
        moves = ", ".join(f"{k} x{f:.3g}" for k, f in factors.items())
        start = ", ".join(f"{k}={values[k]}" for k in factors if k in values)
        reasoning = f"TPE trial {trial} of the task's study: {moves}"
        reasoning += f" from {start}" if start else ""
        reasoning += f"; {reason}" if reason else ""
        return Proposal(
            proposer="tune",
            trial=trial,
            diagnosis=f"tuner trial {trial}: {moves}",
            actions=[
                Action(knob=k, multiplier=round(f, 6), reason=f"tuner trial {trial}")
                for k, f in factors.items()
            ],
            reasoning=reasoning,
        )


def task_fingerprint(kernel: KernelState, settings: Settings) -> TaskFingerprint:
    """The task a run belongs to, from its ``kernel.json`` (``Kernel(task=...)`` wins over
    ``memory.task``)."""
    info = kernel.task
    return TaskFingerprint(
        task=(info.task if info is not None and info.task else None) or settings.memory.task,
        model=info.model if info is not None else None,
        optimizer=info.optimizer if info is not None else None,
        n_params=info.n_params if info is not None else None,
        dataset_size=info.dataset_size if info is not None else None,
        max_steps=kernel.max_steps,
    )


def run_id_of(run_dir: Path, kernel: KernelState) -> str:
    """A name of this run that the next run in the same directory does not share."""
    return f"{run_dir.resolve()}#{kernel.segment}@{kernel.started_at:.3f}"


def status_line(run_dir: Path, settings: Settings, kernel: KernelState | None) -> str:
    """What ``autopilot status`` says of the tuner: off, or its task's study (read only)."""
    from memory.tuner import find_study

    if not settings.tune.enabled:
        return "off (autopilot watch --tune, or [tune] enabled = true)"
    if kernel is None:
        return "on; no kernel yet, so the task (and its study) is not known"
    name = study_name(task_fingerprint(kernel, settings).key(), settings.tune.knobs)
    stored = find_study(settings.memory.store_url(), name)
    if stored is None:
        return f"on; study {name} has no trials yet"
    s = summarize(stored)
    best = "none measured yet"
    if s.best_value is not None:
        moves = ", ".join(
            f"{k.removesuffix(PARAM_SUFFIX)} x{2.0**v:.3g}" for k, v in s.best_params.items()
        )
        best = f"best {s.best_value:+.1%} vs projection ({moves})"
    return (
        f"on; study {name}: {s.trials} trials ({s.complete} measured, {s.failed} failed, "
        f"{s.running} running), {best}"
    )


class TunerHolder:
    """The tuner of one run directory, built on first use: the study is the task's, which
    is known once ``kernel.json`` is, and importing Optuna takes a while."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings, self.run_dir = settings, run_dir
        self._policy: TunePolicy | None = None
        self._run_id: str | None = None
        self.swept = False
        """Whether this process has failed the stale trials of the run (once)."""
        self.open_trial: int | None = None
        """The trial of the open segment, mirrored here so ``close`` can fail it."""

    def get(self, kernel: KernelState) -> TunePolicy:
        """The policy of ``kernel``'s run (a new one when the run changed)."""
        run_id = run_id_of(self.run_dir, kernel)
        if self._policy is None or run_id != self._run_id:
            tune, guards = self.settings.tune, self.settings.guards
            name = study_name(task_fingerprint(kernel, self.settings).key(), tune.knobs)
            stored = open_study(
                self.settings.memory.store_url(),
                name,
                seed=tune.seed,
                n_startup_trials=tune.n_startup_trials,
            )
            self._policy = TunePolicy(
                stored,
                knobs=tune.knobs,
                max_factor=tune.max_factor,
                max_up=guards.max_up,
                max_down=guards.max_down,
                run_id=run_id,
            )
            self._run_id, self.swept = run_id, False
            logger.info("tuner study %s opened (%d trials)", name, len(stored.study.trials))
        return self._policy

    def peek(self) -> TunePolicy | None:
        """The policy if it was built (nothing is opened)."""
        return self._policy


__all__ = [
    "Asked",
    "TunePolicy",
    "TunerHolder",
    "param_name",
    "run_id_of",
    "status_line",
    "task_fingerprint",
]
