"""The online tuner's studies, kept in the memory database: Optuna's RDB storage on the same
SQLite file (or PostgreSQL database) as the runs and their interventions.

One study per task and search space (``study_name``): the tuner of the next run of the same
task loads it (``load_if_exists``), so TPE starts from what the earlier runs measured
instead of from random trials. Optuna's tables (``studies``, ``trials``, ...) share the file
with the store's own (``runs``, ``interventions``, ``schema_info``); no name is shared.

Optuna is imported only when a study is opened: the memory package is imported by every
autopilot, most of which never tune.

Example:
    >>> import tempfile
    >>> url = "sqlite:///" + tempfile.mkdtemp() + "/memory.sqlite"
    >>> stored = open_study(url, study_name("abc123", ["lr"]), seed=0)
    >>> trial = stored.study.ask()
    >>> x = trial.suggest_float("lr_log2_factor", -2.0, 1.0)
    >>> stored.study.tell(trial, 0.1).value
    0.1
    >>> summarize(stored).complete
    1
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory.store import StoreError

if TYPE_CHECKING:
    import optuna

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for another process's (as ``memory.sqlite`` waits)."""
RUN_ID = "run_id"
"""The user attribute naming the run a trial was asked in."""
FAIL_REASON = "fail_reason"
"""The user attribute saying why a trial failed (never measured, replaced, ...)."""


def optuna_storage_url(store_url: str | Path) -> str:
    """Optuna's (SQLAlchemy's) URL for the memory store at ``store_url``.

    ``sqlite:///PATH`` is the same URL (a relative ``PATH``, or ``/abs`` after the three
    slashes); a plain path becomes one; ``postgresql://`` and ``postgres://`` get the
    ``psycopg`` driver SQLAlchemy needs named.

    Example:
        >>> optuna_storage_url("sqlite:////tmp/m.sqlite"), optuna_storage_url("/tmp/m.sqlite")
        ('sqlite:////tmp/m.sqlite', 'sqlite:////tmp/m.sqlite')
        >>> optuna_storage_url("postgresql://u@db/memory")
        'postgresql+psycopg://u@db/memory'

    Raises:
        StoreError: for a scheme with no backend.
    """
    text = str(store_url)
    if text.startswith("sqlite:///"):
        return text
    for scheme in ("postgresql://", "postgres://"):
        if text.startswith(scheme):
            return "postgresql+psycopg://" + text.removeprefix(scheme)
    if text.startswith("postgresql+"):
        return text
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"no tuner storage for {scheme}:// (in {text!r}); use sqlite:///PATH, a path "
            "or postgresql://..."
        )
    return f"sqlite:///{Path(text)}"


def study_name(task_key: str, knobs: Sequence[str]) -> str:
    """The study of one task (``TaskFingerprint.key()``) over one set of knobs: another
    search space is another study, since TPE models one space.

    Example:
        >>> study_name("0f3a", ["weight_decay", "lr"])
        'tune-0f3a-lr+weight_decay'
    """
    if not task_key:
        raise ValueError("task_key must be a non-empty string, got ''")
    return f"tune-{task_key}-{'+'.join(sorted(knobs))}"


@dataclass(frozen=True)
class StoredStudy:
    """An Optuna study with its storage, which sets user attributes of running trials by
    number (Optuna's ``Study`` only does it through a live ``Trial`` object, which does not
    outlive a tick)."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage

    def trial_id(self, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def set_user_attr(self, number: int, key: str, value: Any) -> None:
        """Set ``key`` on trial ``number``, which must still be running."""
        self.storage.set_trial_user_attr(self.trial_id(number), key, value)

    def fail(self, number: int, reason: str) -> bool:
        """Fail trial ``number`` with ``reason``, if it still runs; whether it did."""
        from optuna.trial import TrialState

        frozen = self.study.get_trials(deepcopy=False)[number] if number >= 0 else None
        if frozen is None or frozen.state != TrialState.RUNNING:
            return False
        self.set_user_attr(number, FAIL_REASON, reason[:500])
        self.study.tell(number, state=TrialState.FAIL)
        return True

    def fail_stale(self, run_id: str, *, keep: Collection[int] = (), reason: str) -> list[int]:
        """Fail the trials of ``run_id`` left running (by a watcher that stopped), except
        ``keep``; their numbers."""
        from optuna.trial import TrialState

        stale = [
            t.number
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get(RUN_ID) == run_id and t.number not in keep
        ]
        return [n for n in stale if self.fail(n, reason)]


def open_study(
    store_url: str | Path,
    name: str,
    *,
    seed: int | None = None,
    n_startup_trials: int = 2,
) -> StoredStudy:
    """The study ``name`` in the memory database at ``store_url``, created when missing and
    loaded when it exists (the next run of a task starts warm).

    The sampler is multivariate TPE (the knobs' factors interact: a higher lr wants less
    weight decay), with few random start-up trials since one run has room for only a few
    segments, and no constant liar (one run asks one trial at a time). The direction is
    maximize: a trial's value is its measured effect, positive when better than projected.

    Raises:
        StoreError: when the database cannot be opened, with the URL.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = optuna_storage_url(store_url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=False
    )
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(
            f"cannot open the tuner's study {name!r} at {url}: {exc}; check memory.url "
            "(PostgreSQL needs the psycopg package)"
        ) from exc
    return StoredStudy(study, storage)


def find_study(store_url: str | Path, name: str) -> StoredStudy | None:
    """The study ``name`` if the memory database holds it; nothing is created (a missing
    file stays missing), so ``autopilot status`` can look without side effects on it."""
    url = optuna_storage_url(store_url)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    if name not in optuna.get_all_study_names(storage):
        return None
    return StoredStudy(optuna.load_study(study_name=name, storage=storage), storage)


@dataclass(frozen=True, kw_only=True)
class StudySummary:
    """What ``autopilot status`` shows of a study."""

    name: str
    trials: int
    complete: int
    failed: int
    running: int
    best_value: float | None
    best_params: dict[str, float]


def summarize(stored: StoredStudy) -> StudySummary:
    """Counts by state and the best trial of ``stored``."""
    from optuna.trial import TrialState

    trials = stored.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(done, key=lambda t: float(t.value or 0.0)) if done else None
    return StudySummary(
        name=stored.study.study_name,
        trials=len(trials),
        complete=len(done),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        best_value=float(best.value) if best is not None and best.value is not None else None,
        best_params=dict(best.params) if best is not None else {},
    )


__all__ = [
    "FAIL_REASON",
    "RUN_ID",
    "StoredStudy",
    "StudySummary",
    "find_study",
    "open_study",
    "optuna_storage_url",
    "study_name",
    "summarize",
]
