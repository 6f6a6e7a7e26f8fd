"""The garbage collector tuned for a process whose main job is to watch runs."""

from __future__ import annotations

import gc


def quiet_gc() -> None:
    """Tune the garbage collector for a process whose main job is to watch.

    With the default thresholds, the objects a tick allocates (and the tens of thousands a
    first tick on a long run folds in) set off collections that scan every long-lived object
    of LangGraph, pydantic and numpy. Freezing what is alive after start-up and collecting
    young objects less often halves that first tick and trims the slow tail of the others
    (the windows are columnar, so a tick's median barely moves). ``autopilot watch`` and
    ``serve`` call this; a training process that runs the autopilot in a thread keeps its
    own settings. The autopilot's modules (LangGraph with them) are loaded first, so that
    what they keep alive is frozen too: a service that froze before loading them paid for
    collections over them, which held up every tick of its runs by up to half a second.
    """
    import autopilot.watch  # noqa: F401  (loaded to be frozen)

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
