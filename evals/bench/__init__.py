"""The closed-loop bench: does intervening help? See ``evals.bench.run``; and how many runs
does a bad start take with memory? See ``evals.bench.multi``."""

from evals.bench.multi import MultiPlan, run_multi
from evals.bench.run import BenchPlan, plan_jobs, resolve_tasks, run_bench

__all__ = ["BenchPlan", "MultiPlan", "plan_jobs", "resolve_tasks", "run_bench", "run_multi"]
