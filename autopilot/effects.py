"""Measured effects of applied changes, and rollbacks of the ones that made things worse.

The graph's ``evaluate`` node uses ``Effects``: it records a baseline when a change made by
the autopilot shows up in the ledger, measures it once the horizon has passed (see
``autopilot.evaluate``), writes an effect record next to the decision, and in the auto modes
sends a command that restores the value from before a change that was clearly harmful,
unless the knob was set again since (a rollback must not undo a later change). A rollback
is recognised by the ledger row's ``intent``, never its reason, and is never undone itself.

A rollback never restores a condemned value: one that moves the knob the way a diagnosis
made since the change forbids (an lr cut measured worse while the run went on to diverge:
undoing it would bring back the lr that diverged, see ``autopilot.directions``), or one set
by an earlier change that was itself measured worse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autopilot.config import AUTO_MODES, Settings
from autopilot.decisions import DecisionLog, EffectRecord
from autopilot.directions import against
from autopilot.evaluate import make_baseline, measure
from autopilot.guard_context import condemned_by
from autopilot.summary import Windows
from kernel import (
    Command,
    KnobSpec,
    LedgerRow,
    append_command,
    format_value,
    read_kernel_state,
    read_ledger,
)
from kernel.knobs import knob_family

logger = logging.getLogger(__name__)

_GIVE_UP = 3
"""A baseline with nothing to compare after this many horizons is dropped."""


class Effects:
    """Baselines, measurements and rollbacks for one run."""

    def __init__(self, run_dir: Path, settings: Settings, mode: str, log: DecisionLog) -> None:
        self.run_dir, self.settings, self.mode, self.log = run_dir, settings, mode, log

    def baselines_for(
        self,
        rows: list[LedgerRow],
        windows: Windows,
        key: str | None,
        mode: str = "min",
    ) -> list[dict[str, Any]]:
        """A baseline for each applied change in ``rows`` (none without a key metric)."""
        if key is None:
            return []
        window = windows.get(key, [])
        horizon = self.settings.evaluate.horizon_steps
        return [
            make_baseline(r, window, horizon, r.decision_id or r.proposal_id, mode) for r in rows
        ]

    def measure_due(
        self, state: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[EffectRecord]]:
        """Measure the baselines whose horizon has passed; return what is left, the recent
        decisions with their effects filled in, and the effects measured now."""
        step, key = state["step"], state["key_metric"]
        horizon = self.settings.evaluate.horizon_steps
        left, past = [], [dict(p) for p in state.get("past", [])]
        measured: list[EffectRecord] = []
        for base in state.get("baselines", []):
            if step < base["applied_step"] + horizon:
                left.append(base)
                continue
            window = state["windows"].get(key, [])
            effect = measure(base, window, state["key_mode"], self.settings.evaluate)
            if effect is None:
                if step < base["applied_step"] + _GIVE_UP * horizon:
                    left.append(base)
                continue
            since = _diagnosed_since(state.get("decided", {}), base["applied_step"])
            record = self._record(base, effect, step, key, since)
            _note(past, base, record)
            measured.append(record)
        return left, past, measured

    def _record(
        self,
        base: dict[str, Any],
        effect: dict[str, Any],
        step: int,
        key: str,
        since: list[str],
    ) -> EffectRecord:
        worse = effect["verdict"] == "worse"
        rollback = self._rollback(base, effect, key, since) if worse else None
        record = EffectRecord(
            decision_id=base.get("decision_id") or "",
            command_id=base.get("command_id") or "",
            knob=base.get("knob") or "",
            applied_step=base["applied_step"],
            horizon_steps=self.settings.evaluate.horizon_steps,
            key_metric=key,
            projected=effect["projected"],
            observed=effect["observed"],
            change_rel=effect["change_rel"],
            verdict=effect["verdict"],
            rolled_back=rollback is not None,
            rollback_command_id=rollback,
            measured_at_step=step,
        )
        self.log.append(record)
        logger.info(
            "effect of %s at step %d: %s %+.1f%% vs projection (%s)",
            record.knob,
            record.applied_step,
            key,
            100 * record.change_rel,
            record.verdict,
        )
        return record

    def _rollback(
        self, base: dict[str, Any], effect: dict[str, Any], key: str, since: list[str]
    ) -> str | None:
        """Restore the value from before a harmful change (auto modes only), unless that
        value is condemned (see the module); the command id."""
        if self.mode not in AUTO_MODES or base.get("before") is None:
            return None
        if base.get("intent") == "rollback":
            return None  # never undo an undo
        if "tune" in (base.get("source"), base.get("proposed_by")):
            return None  # the tuner undoes its own trials by a rewind (autopilot.tune_node)
        kernel = read_kernel_state(self.run_dir)
        if kernel is None or kernel.freeze != "off" or kernel.knob(base["knob"]) is None:
            return None
        if _changed_since(self.run_dir, base):
            logger.info(
                "not rolling back %s from step %d: it was changed again since, and a rollback "
                "would undo that later change too",
                base["knob"],
                base["applied_step"],
            )
            return None
        why = self._condemned(base, kernel.knob(base["knob"]), since)
        if why is not None:
            logger.warning(
                "not rolling back %s=%s from step %d although %s was %.0f%% worse than "
                "projected: restoring %s %s",
                base["knob"],
                format_value(base["after"]),
                base["applied_step"],
                key,
                100 * abs(effect["change_rel"]),
                format_value(base["before"]),
                why,
            )
            return None
        command = Command(
            id=f"rollback-{base['command_id']}",
            # the autopilot undoes it, even when a person approved the change it undoes
            source=base.get("proposed_by") or base.get("source") or "rules",
            knob=base["knob"],
            value=base["before"],
            reason=f"rollback: {base['knob']}={format_value(base['after'])} from step "
            f"{base['applied_step']} left {key} {abs(effect['change_rel']):.0%} worse than "
            "projected",
            proposal_id=base.get("decision_id"),
            decision_id=base.get("decision_id"),
            intent="rollback",
            rolls_back=base["command_id"],
            segment=kernel.segment,
        )
        append_command(self.run_dir, command)
        logger.warning("%s", command.reason)
        return command.id

    def _condemned(
        self, base: dict[str, Any], spec: KnobSpec | None, since: list[str]
    ) -> str | None:
        """Why restoring ``base["before"]`` is condemned, or ``None``."""
        knob, before = str(base["knob"]), base["before"]
        current = base["after"] if spec is None else spec.value
        for reference in (base["after"], current):
            wrong = against(since, knob, reference, before)
            if wrong is not None:
                return f"{wrong}, diagnosed since the change"
        rows = [r for r in read_ledger(self.run_dir) if r.decision == "applied"]
        bad = condemned_by(rows, self.log.worse_commands(), knob, before)
        if bad is not None:
            return (
                f"would bring back the value set by {bad.command_id} at step {bad.step}, "
                "whose change was measured worse too"
            )
        return None


def _diagnosed_since(decided: Mapping[str, int], step: int) -> list[str]:
    """The diagnosis kinds decided at or after ``step`` (``decided``: kind -> last step)."""
    return [kind for kind, at in decided.items() if at >= step]


def _changed_since(run_dir: Path, base: dict[str, Any]) -> bool:
    """Whether the ledger shows the knob of ``base`` (or another group of it) set again, by
    anyone, after the change ``base`` measures."""
    family = knob_family(str(base["knob"]))
    seen = False
    for row in read_ledger(run_dir):
        if row.command_id == base.get("command_id"):
            seen = True
        elif seen and row.decision == "applied" and row.knob and knob_family(row.knob) == family:
            return True
    return False


def _note(past: list[dict[str, Any]], base: dict[str, Any], record: EffectRecord) -> None:
    text = f"{record.key_metric} {record.change_rel:+.0%} vs projection ({record.verdict})"
    if record.rolled_back:
        text += ", rolled back"
    for entry in past:
        if entry.get("decision_id") == base.get("decision_id"):
            entry["effect"] = text if not entry.get("effect") else f"{entry['effect']}; {text}"
