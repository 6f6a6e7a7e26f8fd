"""Multi-run memory: what the autopilot learned in earlier runs.

- ``memory.store``: the store (``open_store``; runs and their interventions as typed records,
  ``memory.records``), SQLite by default (``memory.sqlite``), with versioned migrations.
- ``past_run_notes``: a plain summary of measured effects in sibling run directories, which
  the LLM's prompt reads until the store is written by the live autopilot.
"""

from memory.past_runs import past_run_notes
from memory.records import InterventionRecord, RunRecord, TaskFingerprint
from memory.store import MemoryStore, StoreError, open_store

__all__ = [
    "InterventionRecord",
    "MemoryStore",
    "RunRecord",
    "StoreError",
    "TaskFingerprint",
    "open_store",
    "past_run_notes",
]
