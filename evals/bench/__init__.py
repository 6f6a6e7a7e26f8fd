"""The closed-loop bench: does intervening help? See ``evals.bench.run``."""

from evals.bench.run import BenchPlan, plan_jobs, resolve_tasks, run_bench

__all__ = ["BenchPlan", "plan_jobs", "resolve_tasks", "run_bench"]
