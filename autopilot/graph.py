"""The agent graph of one tick, as a LangGraph ``StateGraph``.

```
observe -> summarize -> evaluate -> diagnose -+-> llm --+-> guard -> route -> END
   |                                          |         |     ^
   +-> END (fewer than tick_every_steps new)  +-> rules <-+    |
                                              |    +----------+
                                              +-> route (mode off: record only)
                                              +-> END (healthy)
```

The state (``TickState``) holds only plain JSON values, so the SQLite checkpointer can store
it and a restarted autopilot resumes with its offsets, windows, baselines and cooldowns.
The LLM call has its own node; no node waits for a person (the review queue is a file).
"""

from __future__ import annotations

from typing import Any, TypedDict, cast

from langgraph.graph import END, START, StateGraph

from autopilot.nodes import Nodes


class TickState(TypedDict, total=False):
    """What the graph remembers between ticks (plain JSON values only)."""

    metrics_offset: int
    ledger_offset: int
    step: int
    due_step: int
    windows: dict[str, list[list[float]]]
    """Per metric ``[steps, values]``: columnar, so a checkpoint holds two flat lists per
    metric rather than a list per point, which made unpacking and converting them slow."""
    best: dict[str, list[float]]
    key_metric: str
    key_mode: str
    diagnoses: list[dict[str, Any]]
    proposal: dict[str, Any] | None
    fallback_reason: str | None
    llm_spent: dict[str, Any]
    verdicts: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    baselines: list[dict[str, Any]]
    decided: dict[str, int]
    llm_next_step: int
    past: list[dict[str, Any]]
    outcome: str
    last_decision_id: str | None


def build_graph(nodes: Nodes, checkpointer: Any = None) -> Any:
    """The compiled tick graph over ``nodes``; ``checkpointer`` persists its state."""
    g = StateGraph(TickState)
    for name in ("observe", "summarize", "evaluate", "diagnose", "llm", "rules", "guard"):
        g.add_node(name, cast(Any, getattr(nodes, name)))
    g.add_node("route", cast(Any, nodes.route))
    g.add_edge(START, "observe")
    g.add_conditional_edges("observe", nodes.after_observe, {"go": "summarize", "end": END})
    g.add_edge("summarize", "evaluate")
    g.add_edge("evaluate", "diagnose")
    g.add_conditional_edges(
        "diagnose",
        nodes.after_diagnose,
        {"llm": "llm", "rules": "rules", "record": "route", "end": END},
    )
    g.add_conditional_edges("llm", nodes.after_llm, {"guard": "guard", "rules": "rules"})
    g.add_edge("rules", "guard")
    g.add_edge("guard", "route")
    g.add_edge("route", END)
    return g.compile(checkpointer=checkpointer)
