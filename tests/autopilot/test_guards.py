"""The guards: every rule between a proposal and the kernel, on real settings and run files."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runs import mul, proposal, record_change, spec, val, write_run

from autopilot.config import Settings
from autopilot.errors import AutopilotError
from autopilot.guards import GuardContext, Verdict, check, commands_for
from kernel import LedgerRow, read_ledger, write_freeze

SETTINGS = Settings()  # cooldown 50, global 20, max_actions 2, x[0.1, 2], noop 0.5


def ctx(step: int = 1000, **kw) -> GuardContext:
    knobs = kw.pop("knobs", None) or [
        spec("lr", 0.1, lo=1e-7, hi=10.0),
        spec("weight_decay", 0.01, lo=0.0, hi=1.0),
        spec("momentum", 0.9, lo=0.0, hi=0.999),
        spec("grad_clip", 0.0, lo=0.0, hi=1e4),
        spec("loss.extra", True),
    ]
    return GuardContext(step=step, knobs={k.name: k for k in knobs}, **kw)


def one(*actions, settings: Settings = SETTINGS, context: GuardContext | None = None) -> Verdict:
    return check(proposal(*actions), context or ctx(), settings)[0]


# -- blanket rules --------------------------------------------------------------------------
def test_a_frozen_run_rejects_everything() -> None:
    verdicts = check(proposal(mul("lr", 0.5), mul("weight_decay", 2)), ctx(freeze="prod"), SETTINGS)
    assert [v.status for v in verdicts] == ["rejected", "rejected"]
    assert verdicts[0].reason.startswith("the run is frozen (freeze prod): ")
    assert verdicts[0].value is None and verdicts[0].before == 0.1


def test_low_confidence_is_a_noop() -> None:
    verdicts = check(proposal(mul("lr", 0.5), confidence=0.3), ctx(), SETTINGS)
    assert verdicts[0].status == "rejected"
    assert verdicts[0].reason == "confidence 0.3 below the noop threshold 0.5: no change"


def test_global_cooldown_counts_autopilot_changes() -> None:
    verdicts = check(proposal(mul("lr", 0.5)), ctx(last_autopilot_step=990), SETTINGS)
    assert verdicts[0].status == "rejected"
    assert "changed the run at step 990" in verdicts[0].reason
    assert "global_cooldown_steps is 20, so 10 more steps" in verdicts[0].reason
    assert one(mul("lr", 0.5), context=ctx(last_autopilot_step=980)).status == "allowed"


# -- per-action rules -----------------------------------------------------------------------
def test_unknown_knob_lists_the_known_ones_and_the_rest_goes_on() -> None:
    verdicts = check(proposal(mul("lrr", 0.5), mul("lr", 0.5)), ctx(), SETTINGS)
    assert verdicts[0].status == "rejected" and verdicts[0].before is None
    assert verdicts[0].reason == (
        "unknown knob 'lrr'; this run's knobs are: grad_clip, loss.extra, lr, momentum, "
        "weight_decay"
    )
    assert verdicts[1].status == "allowed"


def test_duplicates_merge_into_the_first_action() -> None:
    verdicts = check(proposal(mul("lr", 0.5), val("lr", 0.01)), ctx(), SETTINGS)
    assert [v.status for v in verdicts] == ["allowed", "rejected"]
    assert verdicts[1].reason.startswith("merged into action 0")


def test_a_per_group_knob_is_the_same_knob_as_its_family() -> None:
    knobs = [spec("lr", 0.1, lo=0, hi=1), spec("lr[0]", 0.1, lo=0, hi=1)]
    verdicts = check(proposal(mul("lr", 0.5), mul("lr[0]", 0.5)), ctx(knobs=knobs), SETTINGS)
    assert verdicts[1].status == "rejected" and "merged into action 0" in verdicts[1].reason


def test_actions_beyond_max_actions_are_dropped() -> None:
    settings = Settings.model_validate({"guards": {"max_actions": 1}})
    verdicts = check(proposal(mul("lr", 0.5), mul("weight_decay", 2)), ctx(), settings)
    assert [v.status for v in verdicts] == ["allowed", "rejected"]
    assert "guards.max_actions is 1" in verdicts[1].reason


def test_a_rejected_action_does_not_use_up_a_slot() -> None:
    settings = Settings.model_validate({"guards": {"max_actions": 1}})
    context = ctx(last_change_step={"lr": 990})
    verdicts = check(proposal(mul("lr", 0.5), mul("weight_decay", 2)), context, settings)
    assert [v.status for v in verdicts] == ["rejected", "allowed"]


def test_per_knob_cooldown_says_how_long_to_wait() -> None:
    verdict = one(mul("lr", 0.5), context=ctx(last_change_step={"lr": 980}))
    assert verdict.status == "rejected"
    assert verdict.reason == (
        "lr was changed at step 980; guards.cooldown_steps is 50, so 30 more steps to wait "
        "(now step 1000)"
    )
    assert one(mul("lr", 0.5), context=ctx(last_change_step={"lr": 950})).status == "allowed"
    assert one(mul("lr[1]", 0.5), context=ctx(last_change_step={"lr": 980})).status == "rejected"


# -- values ---------------------------------------------------------------------------------
def test_a_multiplier_uses_the_true_current_value() -> None:
    knobs = [spec("lr", 0.05, lo=1e-7, hi=10.0)]  # a human halved it since the proposal
    verdict = one(mul("lr", 0.5), context=ctx(knobs=knobs))
    assert (verdict.status, verdict.value, verdict.before) == ("allowed", 0.025, 0.05)
    assert verdict.reason == "lr 0.05 -> 0.025"


def test_per_group_lists_are_resolved_and_capped_element_wise() -> None:
    knobs = [spec("lr", [0.1, 0.01], lo=1e-7, hi=10.0, groups=2)]
    context = ctx(knobs=knobs)
    assert one(mul("lr", 0.5), context=context).value == [0.05, 0.005]
    capped = one(val("lr", [0.15, 0.1]), context=context)
    assert capped.status == "clamped" and capped.value == [0.15, 0.02]
    broadcast = one(val("lr", 0.05), context=context)
    assert broadcast.status == "clamped" and broadcast.value == [0.05, 0.02]
    wrong = one(val("lr", [0.1, 0.1, 0.1]), context=context)
    assert wrong.status == "rejected" and "expects 2 numbers or one" in wrong.reason


def test_relative_change_is_capped_and_the_request_kept() -> None:
    up = one(mul("lr", 5.0))
    assert (up.status, up.value) == ("clamped", 0.2)
    assert up.requested.multiplier == 5.0
    assert up.reason == "lr x5 would give 0.5; capped at x2 (guards.max_up): lr 0.1 -> 0.2"
    down = one(val("lr", 1e-5))
    assert down.status == "clamped" and down.value == pytest.approx(0.01)
    assert "capped at x0.1 (guards.max_down)" in down.reason and down.requested.value == 1e-5


def test_values_are_clamped_into_the_kernel_bounds() -> None:
    knobs = [spec("momentum", 0.9, lo=0.0, hi=0.999)]
    verdict = one(val("momentum", 1.5), context=ctx(knobs=knobs))
    assert (verdict.status, verdict.value) == ("clamped", 0.999)
    assert "clamped into the bounds [0, 0.999]" in verdict.reason


def test_values_are_clamped_into_the_config_bounds_too() -> None:
    settings = Settings.model_validate({"bounds": {"lr": [1e-6, 0.15]}})
    verdict = one(mul("lr", 2.0), settings=settings)
    assert (verdict.status, verdict.value) == ("clamped", 0.15)
    per_group = ctx(knobs=[spec("lr[0]", 0.1, lo=1e-7, hi=10.0)])
    assert one(mul("lr[0]", 2.0), settings=settings, context=per_group).value == 0.15


def test_bounds_that_do_not_overlap_reject() -> None:
    settings = Settings.model_validate({"bounds": {"momentum": [2.0, 3.0]}})
    verdict = one(val("momentum", 0.5), settings=settings)
    assert verdict.status == "rejected" and "do not overlap; fix bounds.momentum" in verdict.reason


def test_bool_knobs_take_only_bools() -> None:
    assert one(val("loss.extra", False)).value is False
    assert "cannot apply to an on/off knob" in one(mul("loss.extra", 2.0)).reason
    assert "expects true or false, got 0.5" in one(val("loss.extra", 0.5)).reason
    assert one(val("loss.extra", True)).reason == "loss.extra is already true: no change"
    assert "expects a number, got True" in one(val("lr", True)).reason


def test_a_multiplier_on_a_knob_at_zero_is_rejected() -> None:
    verdict = one(mul("grad_clip", 2.0))
    assert verdict.status == "rejected"
    assert "grad_clip is 0, so a multiplier has nothing to scale" in verdict.reason


def test_from_zero_only_the_bounds_apply() -> None:
    enable = one(val("grad_clip", 1.0))
    assert (enable.status, enable.value) == ("allowed", 1.0)
    huge = one(val("grad_clip", 1e6))
    assert (huge.status, huge.value) == ("clamped", 1e4)


def test_a_weight_decay_that_acts_as_none_may_be_turned_on_to_1e_2() -> None:
    knobs = [spec("weight_decay", 1e-5, lo=0.0, hi=1.0), spec("lr", 1e-5, lo=1e-7, hi=10.0)]
    assert one(val("weight_decay", 1e-2), context=ctx(knobs=knobs)).value == 1e-2
    assert one(val("weight_decay", 0.5), context=ctx(knobs=knobs)).value == 1e-2  # at most
    assert one(val("lr", 1e-2), context=ctx(knobs=knobs)).value == 2e-5  # lr: capped x2


def test_a_change_to_the_same_value_is_no_change() -> None:
    assert one(val("lr", 0.1)).reason == "lr is already 0.1: no change"
    assert one(mul("lr", 1.0 + 1e-12)).status == "rejected"
    knobs = [spec("lr", 10.0, lo=1e-7, hi=10.0)]
    at_top = one(mul("lr", 2.0), context=ctx(knobs=knobs))  # clamped back to where it is
    assert at_top.status == "rejected" and "no change" in at_top.reason


# -- commands -------------------------------------------------------------------------------
def test_commands_for_keeps_guarded_multipliers_with_deterministic_ids() -> None:
    p = proposal(mul("lr", 5.0, reason="escape the plateau"), mul("nope", 2), val("grad_clip", 1))
    verdicts = check(p, ctx(), SETTINGS)
    commands = commands_for(verdicts, source="ai", proposal_id="d1000-abc", reason_prefix="plateau")
    assert [c.id for c in commands] == ["ai-d1000-abc-0", "ai-d1000-abc-2"]
    lr = commands[0]
    # x5 was clamped to x2: the kernel scales the value it holds when it applies it
    assert (lr.knob, lr.value, lr.multiplier, lr.source) == ("lr", None, 2.0, "ai")
    assert (commands[1].value, commands[1].multiplier) == (1.0, None)
    assert lr.proposal_id == "d1000-abc"
    assert (lr.reason or "").startswith("plateau; escape the plateau; lr x5 would give 0.5")
    again = commands_for(check(p, ctx(), SETTINGS), source="ai", proposal_id="d1000-abc")
    assert [c.id for c in again] == [c.id for c in commands]


# -- the context from a run directory -------------------------------------------------------
def test_context_from_a_run_directory(tmp_path: Path) -> None:
    write_run(tmp_path, step=1000)
    record_change(tmp_path, step=970, knob="lr", source="human")
    record_change(tmp_path, step=985, knob="weight_decay", source="rules")
    record_change(tmp_path, step=999, knob="lr", source="ai", decision="rejected")
    context = GuardContext.from_run(tmp_path)
    assert context.step == 1000 and context.freeze == "off"
    assert context.last_change_step == {"lr": 970, "weight_decay": 985}
    assert context.last_autopilot_step == 985  # the human change does not count here
    assert context.knobs["lr"].value == 0.1


def test_a_human_change_starts_the_knob_cooldown(tmp_path: Path) -> None:
    write_run(tmp_path, step=1000)
    record_change(tmp_path, step=990, knob="lr", source="human")
    verdicts = check(proposal(mul("lr", 0.5)), GuardContext.from_run(tmp_path), SETTINGS)
    assert verdicts[0].status == "rejected" and "40 more steps" in verdicts[0].reason


def test_freeze_file_counts_before_the_kernel_reads_it(tmp_path: Path) -> None:
    write_run(tmp_path, step=1000)
    write_freeze(tmp_path, "prod")
    assert GuardContext.from_run(tmp_path).freeze == "prod"
    write_run(tmp_path, step=1000, freeze="prod")
    write_freeze(tmp_path, "off")
    assert GuardContext.from_run(tmp_path).freeze == "prod"  # the kernel has not lifted it yet


def test_no_kernel_yet(tmp_path: Path) -> None:
    with pytest.raises(AutopilotError, match="no kernel has started"):
        GuardContext.from_run(tmp_path)


# -- the rule that decided, the bounds judged under -----------------------------------------
def test_every_verdict_names_the_rule_that_decided() -> None:
    context = ctx(last_change_step={"weight_decay": 990})
    p = proposal(mul("lr", 5.0), mul("nope", 2), mul("weight_decay", 2), val("lr", 0.01))
    assert [v.rule for v in check(p, context, SETTINGS)] == [
        "max_step",
        "unknown_knob",
        "cooldown",
        "same_family",
    ]
    assert one(mul("lr", 0.5)).rule is None  # passed untouched
    assert one(val("momentum", 1.5)).rule == "bounds"
    assert one(val("lr", 0.1)).rule == "no_change"
    assert one(val("lr", True)).rule == "invalid_value"
    assert check(proposal(mul("lr", 0.5)), ctx(freeze="prod"), SETTINGS)[0].rule == "freeze"
    assert check(proposal(mul("lr", 0.5), confidence=0.1), ctx(), SETTINGS)[0].rule == "noop"
    late = ctx(last_autopilot_step=995)
    assert check(proposal(mul("lr", 0.5)), late, SETTINGS)[0].rule == "global_cooldown"


def test_a_command_carries_the_config_bounds_it_was_judged_under() -> None:
    """The bug: with bounds.lr = [1e-4, 0.1] the guards passed 0.05 -> 0.1 as "lr x2"; a
    warmup had moved lr to 0.08 by the time the kernel applied it, which gave 0.16."""
    settings = Settings.model_validate({"bounds": {"lr": [1e-4, 0.1]}})
    context = ctx(knobs=[spec("lr", 0.05, lo=1e-7, hi=10.0)])
    verdicts = check(proposal(mul("lr", 2.0)), context, settings)
    assert (verdicts[0].status, verdicts[0].value, verdicts[0].bounds) == (
        "allowed",
        0.1,
        (1e-4, 0.1),
    )
    (command,) = commands_for(verdicts, source="rules", proposal_id="d1")
    assert (command.multiplier, command.bounds) == (2.0, (1e-4, 0.1))
    plain = commands_for(
        check(proposal(mul("lr", 2.0)), context, SETTINGS), source="rules", proposal_id="d2"
    )
    assert plain[0].bounds is None  # the kernel's own bounds: the kernel knows them


def test_the_prompt_and_the_guard_use_the_same_bounds_for_a_group_knob() -> None:
    """The bug: the prompt was told lr[1] may reach 10 while the guard enforced 0.1."""
    from autopilot.context import knobs_with_bounds
    from autopilot.guards import knob_bounds

    settings = Settings.model_validate({"bounds": {"lr": [1e-4, 0.1]}})
    state = write_run_state([spec("lr[1]", 0.01, lo=1e-7, hi=10.0), spec("loss.extra", True)])
    shown = knobs_with_bounds(state, settings)["lr[1]"]
    assert (shown.lo, shown.hi) == knob_bounds(state.knobs[0], settings) == (1e-4, 0.1)
    assert knobs_with_bounds(state, settings)["loss.extra"] == state.knobs[1]
    near_top = ctx(knobs=[spec("lr[1]", 0.09, lo=1e-7, hi=10.0)])
    assert one(val("lr[1]", 0.5), settings=settings, context=near_top).value == shown.hi


def write_run_state(knobs):
    from kernel.state import KernelState

    return KernelState(
        pid=1, host="test", started_at=0.0, heartbeat=0.0, last_step=1000, knobs=knobs
    )


# -- a context from data ----------------------------------------------------------------------
def test_a_context_is_built_from_data_and_from_run_reads_the_same(tmp_path: Path) -> None:
    state = write_run(tmp_path, step=1000)
    record_change(tmp_path, step=970, knob="lr", source="human")
    record_change(tmp_path, step=985, knob="weight_decay", source="rules")
    rows = read_ledger(tmp_path)
    built = GuardContext.build(state, rows, "prod", improved=["rules-weight_decay-985"], step=1003)
    assert (built.step, built.freeze, built.segment) == (1003, "prod", 0)
    assert built.last_change_step == {"lr": 970, "weight_decay": 985}
    assert built.last_autopilot_step == 985 and built.improved == {"rules-weight_decay-985"}
    assert [r.knob for r in built.history] == ["lr", "weight_decay"]
    read = GuardContext.from_run(tmp_path)
    assert read == GuardContext.build(state, rows, "off")


def test_rows_of_an_earlier_run_segment_do_not_count(tmp_path: Path) -> None:
    """Steps start again at 0 in a new segment: a change at step 5000 of the previous run
    must not hold a knob in cooldown (or count for the cumulative guard) now."""
    state = write_run(tmp_path, step=100).model_copy(update={"segment": 1})
    old = LedgerRow(seq=1, step=5000, wall_time=0.0, decision="applied", op="set", knob="lr",
                    source="rules", before=0.2, after=0.1, segment=0)  # fmt: skip
    context = GuardContext.build(state, [old], "off")
    assert context.last_change_step == {} and context.last_autopilot_step is None
    assert context.history == () and context.segment == 1
    verdicts = check(proposal(mul("lr", 0.5)), context, SETTINGS)
    (command,) = commands_for(verdicts, source="rules", proposal_id="d1", segment=1)
    assert command.segment == 1
