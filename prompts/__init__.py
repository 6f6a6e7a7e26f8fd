"""Prompt templates for the autopilot's LLM agents, kept as versioned data files.

Templates are files in this package (``<role>.v<N>.md``), read with ``importlib.resources``
so they ship inside the wheel. The decision record names the version it used.
"""

__all__: list[str] = []
