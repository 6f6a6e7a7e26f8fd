"""Multi-run memory: what the autopilot learned in earlier runs.

- ``memory.store``: the store (``open_store``; runs and their interventions as typed records,
  ``memory.records``), SQLite by default (``memory.sqlite``), with versioned migrations.
- ``memory.lessons``: the store's measured cases grouped into lessons (``Lesson``), weighted
  by how similar their task was and how consistent their effects; the autopilot reads them
  through ``autopilot.remember``.
"""

from memory.records import InterventionRecord, RunRecord, TaskFingerprint
from memory.store import MemoryStore, StoreError, open_store

__all__ = [
    "InterventionRecord",
    "MemoryStore",
    "RunRecord",
    "StoreError",
    "TaskFingerprint",
    "open_store",
]
