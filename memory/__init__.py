"""Multi-run memory: runs, interventions, their measured effects, and the lessons drawn."""

__all__: list[str] = []
