"""Offline evaluation: replay of recorded runs and a closed-loop benchmark suite."""

__all__: list[str] = []
