"""Multi-run memory: what the autopilot learned in earlier runs.

For now a plain summary of measured effects in sibling run directories (``past_run_notes``).
"""

from memory.past_runs import past_run_notes

__all__ = ["past_run_notes"]
