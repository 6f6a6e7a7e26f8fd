"""The agent graph of one tick, as a LangGraph ``StateGraph`` over the ``TickState``.

```
observe -> evaluate -> diagnose -+-> llm --+-> guard -> route -> END
   |                             |         |     ^
   +-> END (not due)             +-> rules <-+    |
                                 |    |    +-> END (a call started or in flight)
                                 |    +----------+
                                 +-> route (mode off: record only)
                                 +-> END (healthy)
```

With the online tuner on (``tune.enabled``, modes ``suggest`` and ``auto``), ``diagnose`` goes
to ``score`` (which measures the open segment's trial), and from there to ``tune`` (a new
segment: its proposal goes on to ``guard``) or as above (``autopilot.tune_node``).

The ``llm`` node never waits for the provider: it starts the call in a thread of the
context, and a later tick takes the answer to the guards (``autopilot.llm_calls``); an
urgent diagnosis goes on to the rules in the same tick.

The nodes are plain functions (``autopilot.nodes``, ``autopilot.propose``) of a
``TickContext`` (bound here) and the state; the routers return a ``Literal`` of their
targets. The run summary the detectors, the LLM and the decision records read is derived
from the windows when first needed and cached in the context, not a node of its own. The
state holds only plain JSON values, so the SQLite checkpointer can store it and a restarted
autopilot resumes with its offsets, windows, baselines and cooldowns. No node waits for a
person (the review queue is a file).

Example:
    >>> import tempfile
    >>> from autopilot.config import Settings
    >>> from autopilot.state import TickContext
    >>> ctx = TickContext.create(tempfile.mkdtemp(), Settings(), "suggest")
    >>> graph = build_graph(ctx)
    >>> graph.invoke({})["outcome"]  # no metrics logged yet
    'idle'
"""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from autopilot import nodes, propose, tune_node
from autopilot.state import TickContext, TickState

NODES = ("observe", "evaluate", "diagnose", "llm", "rules", "guard", "route")
TUNE_NODES = ("score", "tune")
"""The nodes the online tuner adds (``autopilot.tune_node``)."""


def build_graph(
    ctx: TickContext, checkpointer: Any = None
) -> CompiledStateGraph[TickState, None, TickState, TickState]:
    """The compiled tick graph with ``ctx`` bound to its nodes; ``checkpointer`` persists
    its state between ticks."""
    g: StateGraph[TickState, None, TickState, TickState] = StateGraph(TickState)
    g.add_node("observe", partial(nodes.observe, ctx))
    g.add_node("evaluate", partial(nodes.evaluate, ctx))
    g.add_node("diagnose", partial(nodes.diagnose, ctx))
    g.add_node("llm", partial(propose.llm, ctx))
    g.add_node("rules", partial(propose.rules, ctx))
    g.add_node("guard", partial(nodes.guard, ctx))
    g.add_node("route", partial(nodes.route, ctx))
    g.add_edge(START, "observe")
    g.add_conditional_edges("observe", nodes.after_observe, ["evaluate", END])
    g.add_edge("evaluate", "diagnose")
    if tune_node.enabled(ctx):
        g.add_node("score", partial(tune_node.score, ctx))
        g.add_node("tune", partial(tune_node.tune, ctx))
        g.add_edge("diagnose", "score")
        g.add_conditional_edges(
            "score", partial(tune_node.after_score, ctx), ["tune", "llm", "rules", "route", END]
        )
        g.add_conditional_edges("tune", tune_node.after_tune, ["guard", END])
    else:
        g.add_conditional_edges(
            "diagnose", partial(nodes.after_diagnose, ctx), ["llm", "rules", "route", END]
        )
    g.add_conditional_edges("llm", propose.after_llm, ["guard", "rules", END])
    g.add_edge("rules", "guard")
    g.add_edge("guard", "route")
    g.add_edge("route", END)
    return g.compile(checkpointer=checkpointer)


__all__ = ["NODES", "TUNE_NODES", "build_graph"]
