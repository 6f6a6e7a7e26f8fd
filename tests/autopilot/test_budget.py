"""Budget: worst-case estimates, reservations under a lock, charges, and caps never passed."""

from __future__ import annotations

import json
import threading

import pytest

from autopilot.budget import Budget, cost_usd
from autopilot.config import Price
from autopilot.errors import BudgetExceeded
from autopilot.tokens import Usage, count_message_tokens

MESSAGES = [
    {"role": "system", "content": "You are the analyst."},
    {"role": "user", "content": "Step 900. val/loss has been flat for 400 steps. " * 5},
]
MILLION = 1_000_000


def test_the_estimate_is_the_worst_case_of_every_token(run_dir, llm_settings):
    estimate = Budget(run_dir, llm_settings).estimate(MESSAGES, 300)
    assert estimate.tokens_in >= count_message_tokens(MESSAGES, "test-model")
    assert estimate.tokens_out == 300
    assert estimate.usd == pytest.approx((estimate.tokens_in * 1.0 + 300 * 2.0) / MILLION)


def test_a_repair_attempt_and_a_schema_raise_the_estimate(run_dir, llm_settings):
    budget = Budget(run_dir, llm_settings)
    once = budget.estimate(MESSAGES, 300)
    twice = budget.estimate(MESSAGES, 300, attempts=2, extra_text='{"type": "object"}')
    assert twice.tokens_in > 2 * once.tokens_in + 300 and twice.tokens_out == 600


def test_cached_input_is_charged_at_its_own_rate():
    price = Price(input=1.0, cached_input=0.5, output=2.0)
    assert cost_usd(price, 1000, 100, cached_in=600) == pytest.approx(
        (400 * 1.0 + 600 * 0.5 + 100 * 2.0) / MILLION
    )


def test_a_charge_replaces_its_reservation(run_dir, llm_settings):
    budget = Budget(run_dir, llm_settings)
    held = budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1")
    assert budget.spent_run() == pytest.approx(held.usd)
    charged = budget.charge(held, Usage(tokens_in=100, tokens_out=50, calls=1))
    assert charged.cost_usd == pytest.approx((100 + 2 * 50) / MILLION)
    assert (charged.tokens_in, charged.tokens_out, charged.calls) == (100, 50, 1)
    assert (
        budget.spent_run() == pytest.approx(charged.cost_usd) == pytest.approx(budget.spent_day())
    )


def test_spend_survives_a_new_budget_instance(run_dir, llm_settings):
    first = Budget(run_dir, llm_settings)
    first.charge(
        first.reserve(first.estimate(MESSAGES, 300), "analyst@v1"),
        Usage(tokens_in=1000, tokens_out=100),
    )
    pending = first.reserve(first.estimate(MESSAGES, 300), "planner@v1")  # never charged
    again = Budget(run_dir, llm_settings)
    assert again.spent_run() == pytest.approx(1200 / MILLION + pending.usd)
    assert again.spent_day() == pytest.approx(again.spent_run())


def test_both_ledgers_are_append_only_json_lines(run_dir, llm_settings):
    budget = Budget(run_dir, llm_settings)
    budget.charge(
        budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1"),
        Usage(tokens_in=10, tokens_out=5),
    )
    day = llm_settings.budget.day_ledger_path()
    for path in (run_dir / "autopilot" / "spend.jsonl", day):
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        assert [e["type"] for e in entries] == ["reserve", "charge"]
        assert entries[1]["tokens_in"] == 10 and entries[1]["run"] == str(run_dir.resolve())


def test_a_call_that_could_pass_the_run_cap_is_refused(run_dir, make_settings):
    settings = make_settings(budget={"per_run_usd": 0.001})
    budget = Budget(run_dir, settings)
    estimate = budget.estimate(MESSAGES, 300)
    reserved = 0
    with pytest.raises(BudgetExceeded) as caught:
        while True:
            budget.reserve(estimate, "analyst@v1")
            reserved += 1
    assert reserved == int(0.001 // estimate.usd)
    assert budget.spent_run() <= 0.001 < budget.spent_run() + estimate.usd
    reason = caught.value.reason
    assert "per-run cap $0.001000" in reason and f"${budget.spent_run():.6f} spent" in reason
    assert f"up to ${estimate.usd:.6f}" in reason and "budget.per_run_usd" in reason


def test_the_day_cap_is_shared_by_runs(tmp_path, make_settings):
    settings = make_settings(budget={"per_day_usd": 0.001})
    first, second = Budget(tmp_path / "a", settings), Budget(tmp_path / "b", settings)
    estimate = first.estimate(MESSAGES, 300)
    while first.spent_day() + estimate.usd <= 0.001:
        first.reserve(estimate, "analyst@v1")
    with pytest.raises(BudgetExceeded, match="per-day cap"):
        second.reserve(estimate, "analyst@v1")
    assert second.spent_run() == 0 and second.remaining() == pytest.approx(
        0.001 - first.spent_day()
    )


def test_yesterdays_spend_does_not_count_today(run_dir, make_settings):
    settings = make_settings(budget={"per_day_usd": 0.001, "per_run_usd": 1.0})
    yesterday = Budget(run_dir, settings, today=lambda: "2030-01-01")
    estimate = yesterday.estimate(MESSAGES, 300)
    yesterday.reserve(estimate, "analyst@v1")
    today = Budget(run_dir, settings, today=lambda: "2030-01-02")
    assert today.spent_day() == 0 and today.spent_run() == pytest.approx(estimate.usd)
    today.reserve(estimate, "analyst@v1")


def test_a_model_without_a_price_is_refused_with_the_fix(run_dir, make_settings):
    budget = Budget(run_dir, make_settings(llm={"model": "my-local-llama"}))
    with pytest.raises(BudgetExceeded) as caught:
        budget.estimate(MESSAGES, 300)
    assert '[prices."my-local-llama"]' in caught.value.reason
    assert "autopilot.toml" in caught.value.reason


def test_a_free_local_model_is_never_capped(run_dir, make_settings):
    settings = make_settings(
        prices={"test-model": {"input": 0, "output": 0}}, budget={"per_run_usd": 0}
    )
    budget = Budget(run_dir, settings)
    budget.charge(
        budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1"),
        Usage(tokens_in=500, tokens_out=50),
    )
    assert budget.spent_run() == 0 and budget.remaining() == 0


def test_an_unreadable_line_is_skipped(run_dir, llm_settings):
    budget = Budget(run_dir, llm_settings)
    held = budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1")
    with open(run_dir / "autopilot" / "spend.jsonl", "a") as f:
        f.write('{"type": "charge", "id": "torn\n')
    assert budget.spent_run() == pytest.approx(held.usd)


def test_check_and_reserve_happen_under_one_lock(tmp_path, make_settings):
    day = "2030-01-01"
    probe = Budget(tmp_path / "probe", make_settings())
    estimate = probe.estimate(MESSAGES, 300)
    settings = make_settings(budget={"per_day_usd": 1.5 * estimate.usd})
    rival = Budget(tmp_path / "rival", settings, today=lambda: day)
    outcome: list[str] = []

    def rival_reserves() -> None:
        try:
            rival.reserve(estimate, "rival")
            outcome.append("reserved")
        except BudgetExceeded:
            outcome.append("refused")

    racer = threading.Thread(target=rival_reserves)

    def today_inside_the_lock() -> str:
        # the rival tries while we hold the lock: it must wait, then see our reservation
        if not racer.is_alive() and not outcome:
            racer.start()
            racer.join(timeout=0.2)
        return day

    Budget(tmp_path / "first", settings, today=today_inside_the_lock).reserve(estimate, "first")
    racer.join(timeout=30)
    assert outcome == ["refused"]
    assert rival.spent_day() == pytest.approx(estimate.usd)


def _fill(budget: Budget, cap: float) -> int:
    """Reserve and charge calls of about 1/5 of ``cap`` until the next could pass it."""
    made = 0
    while True:
        estimate = budget.estimate(MESSAGES, 300)
        try:
            held = budget.reserve(estimate, "analyst@v1")
        except BudgetExceeded:
            return made
        budget.charge(held, Usage(tokens_in=estimate.tokens_in, tokens_out=300))
        made += 1


def test_a_truncated_run_ledger_is_exhausted_until_reconciled(run_dir, make_settings):
    probe = Budget(run_dir.parent / "probe", make_settings())
    cap = 5.5 * probe.estimate(MESSAGES, 300).usd
    settings = make_settings(budget={"per_run_usd": cap})
    budget = Budget(run_dir, settings)
    assert _fill(budget, cap) == 5
    run_file = run_dir / "autopilot" / "spend.jsonl"
    run_file.write_text("")  # truncated mid-run
    with pytest.raises(BudgetExceeded) as caught:
        budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1")
    reason = caught.value.reason
    assert f"{run_file} shrank" in reason and "restart" in reason
    assert budget.remaining() == 0
    # a restarted watcher reconciles: this run's lines in the day ledger still count
    again = Budget(run_dir, settings)
    assert again.spent_run() == pytest.approx(budget.spent_day())
    assert _fill(again, cap) == 0
    assert again.spent_run() <= cap


def test_a_truncated_day_ledger_still_counts_this_runs_spend(tmp_path, make_settings):
    probe = Budget(tmp_path / "probe", make_settings())
    cap = 5.5 * probe.estimate(MESSAGES, 300).usd
    settings = make_settings(budget={"per_day_usd": cap})
    first = Budget(tmp_path / "a", settings)
    assert _fill(first, cap) == 5
    settings.budget.day_ledger_path().write_text("")
    with pytest.raises(BudgetExceeded, match="shrank"):
        first.reserve(first.estimate(MESSAGES, 300), "analyst@v1")
    restarted = Budget(tmp_path / "a", settings)
    assert restarted.spent_day() == pytest.approx(restarted.spent_run())
    assert _fill(restarted, cap) == 0


def test_a_deleted_run_ledger_counts_as_shrunk(run_dir, llm_settings):
    budget = Budget(run_dir, llm_settings)
    budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1")
    (run_dir / "autopilot" / "spend.jsonl").unlink()
    with pytest.raises(BudgetExceeded, match="shrank"):
        budget.reserve(budget.estimate(MESSAGES, 300), "analyst@v1")
