"""The cumulative guard: the autopilot's own changes to a knob may not add up without limit.

The bug it reproduces: on a run that had merely stopped improving, ``auto`` halved lr 14
times in 1,500 steps, down to the kernel's floor of 1e-7, every measured effect neutral.
"""

from __future__ import annotations

import pytest
from _runs import mul, proposal, spec

from autopilot.config import Settings
from autopilot.guards import GuardContext, Verdict, check
from kernel import KnobValue, LedgerRow
from kernel.state import KernelState

SETTINGS = Settings()  # max_total_down 0.1, max_total_up 10, window 5000 steps


class Run:
    """A run's kernel state and ledger as the guards see them, changed by what passes."""

    def __init__(self, value: KnobValue, *, step: int = 200, knob: str = "lr") -> None:
        self.knob, self.value, self.step = knob, value, step
        self.rows: list[LedgerRow] = []
        self.improved: set[str] = set()

    def context(self) -> GuardContext:
        groups = len(self.value) if isinstance(self.value, list) else None
        knob = spec(self.knob, self.value, lo=1e-7, hi=10.0, groups=groups)
        state = KernelState(
            pid=1, host="test", started_at=0.0, heartbeat=0.0, last_step=self.step, knobs=[knob]
        )
        return GuardContext.build(state, self.rows, "off", improved=self.improved)

    def propose(self, factor: float, settings: Settings = SETTINGS) -> Verdict:
        """Propose ``lr x factor`` now; apply it if it passes; 110 steps go by."""
        (verdict,) = check(proposal(mul(self.knob, factor)), self.context(), settings)
        if verdict.passed and verdict.value is not None:
            self.record(verdict.value, source="rules")
        self.step += 110
        return verdict

    def record(self, after: KnobValue, *, source: str) -> str:
        command_id = f"{source}-{len(self.rows)}"
        self.rows.append(
            LedgerRow(seq=len(self.rows) + 1, step=self.step, wall_time=0.0, decision="applied",
                      op="set", source=source, knob=self.knob, before=self.value, after=after,
                      command_id=command_id)
        )  # fmt: skip
        self.value = after
        return command_id


def test_halving_a_stuck_run_stops_at_the_total_cap() -> None:
    run = Run(0.1)
    verdicts = [run.propose(0.5) for _ in range(14)]
    assert [v.status for v in verdicts[:4]] == ["allowed", "allowed", "allowed", "clamped"]
    assert run.value == pytest.approx(0.01)  # x0.1 of where the autopilot found it, not 1e-7
    assert len(run.rows) == 4
    assert {(v.status, v.rule) for v in verdicts[4:]} == {("rejected", "cumulative")}
    assert verdicts[3].rule == "cumulative"
    assert "capped by guards.max_total_down (0.1 in total)" in verdicts[4].reason
    assert "lr is already at x0.1 of 0.1 after 4 autopilot changes since step 200" in (
        verdicts[4].reason
    )


def test_a_measured_improvement_starts_the_count_afresh() -> None:
    run = Run(0.1)
    for _ in range(4):
        run.propose(0.5)
    assert run.propose(0.5).rule == "cumulative"
    run.improved.add(run.rows[-1].command_id or "")
    assert run.propose(0.5).status == "allowed"
    assert run.value == pytest.approx(0.005)


def test_a_person_setting_the_knob_starts_the_count_afresh() -> None:
    run = Run(0.1)
    for _ in range(4):
        run.propose(0.5)
    run.record(0.02, source="human")
    run.step += 100
    assert run.propose(0.5).status == "allowed" and run.value == pytest.approx(0.01)


def test_changes_older_than_the_window_do_not_count() -> None:
    settings = Settings.model_validate({"guards": {"total_window_steps": 300}})
    run = Run(0.1)
    statuses = [run.propose(0.5, settings).status for _ in range(8)]
    assert "rejected" not in statuses  # at most 3 halvings (x0.125) fall inside 300 steps
    assert SETTINGS.guards.total_window_steps == 5000


def test_raising_is_capped_in_total_too() -> None:
    run = Run(0.01)
    verdicts = [run.propose(2.0) for _ in range(6)]
    assert run.value == pytest.approx(0.1)  # x10 in total (guards.max_total_up)
    assert verdicts[-1].rule == "cumulative" and "guards.max_total_up" in verdicts[-1].reason


def test_a_lower_total_cap_holds_per_group_values_element_wise() -> None:
    settings = Settings.model_validate({"guards": {"max_total_down": 0.25}})
    run = Run([0.1, 0.01])
    for _ in range(4):
        run.propose(0.5, settings)
    assert run.value == pytest.approx([0.025, 0.0025])


def test_a_rollback_is_never_held_back() -> None:
    run = Run(0.01)
    for _ in range(4):
        run.propose(2.0)
    assert run.value == pytest.approx(0.1)
    undo = mul("lr", 1.5).model_copy(update={"rolls_back": run.rows[-1].command_id})
    (verdict,) = check(proposal(undo), run.context(), SETTINGS)
    assert verdict.status == "allowed" and verdict.value == pytest.approx(0.15)


def stuck(step: int, lr: float) -> float:
    """A run that has stopped improving, whatever its lr."""
    return 0.5


def test_auto_on_a_stuck_run_stops_lowering_lr_once_a_cut_is_measured_no_better(
    make_kernel, run_dir, tmp_path
):
    """The repro end to end: 1,500 steps of a stuck run in ``auto`` through the real graph.
    It used to halve lr until the total cap held it (the unit tests above keep the cap);
    the rules now read the measured effects: the cut is measured neutral, so the plateau
    tries lr up once, and with both directions measured no better they stop."""
    from test_graph import LR, Training, decisions, rule_settings

    from autopilot.watch import Autopilot
    from kernel import read_ledger

    run = Training(make_kernel, stuck)
    with Autopilot(run_dir, mode="auto", settings=rule_settings(tmp_path)) as pilot:
        run.train(1500, pilot)
    moved = [r for r in read_ledger(run_dir) if r.decision == "applied" and r.knob == "lr"]
    assert [(r.before, r.after) for r in moved] == [(LR, LR * 0.5), (LR * 0.5, LR)]
    assert run.lr == pytest.approx(LR)
    last = decisions(run_dir)[-1]
    assert last.proposal is not None and last.proposal.actions == []
    assert "measured neutral" in last.proposal.reasoning
