"""The names every package shares, defined once: the sentiment classes in the model's output
order and the query strategies. No imports, so any package (the torch-free ones included)
may depend on it."""

from __future__ import annotations

__all__ = ["LABELS", "STRATEGIES"]

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
"""Class names in the model's output order: column 0, 1, 2 of every probability matrix."""

STRATEGIES: tuple[str, ...] = (
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "diverse",
    "badge",
)
"""Query strategies (training.selection implements each; SENTILOOP_STRATEGY picks one)."""
