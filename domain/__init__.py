"""The names every package shares, defined once: the sentiment classes in the model's output
order, the query strategies and the root of our exceptions. No imports, so any package (the
torch-free ones included) may depend on it."""

from __future__ import annotations

__all__ = [
    "COLD_STARTS",
    "CONSENSUS_METHODS",
    "LABELS",
    "LABEL_DESCRIPTIONS",
    "PERMISSIONS",
    "PII_MODES",
    "ROLES",
    "STRATEGIES",
    "SentiloopError",
]

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

COLD_STARTS: tuple[str, str, str] = ("zero-shot", "coverage", "random")
"""How the first batch is chosen before any model exists (training.cold_start implements
each; SENTILOOP_COLD_START picks one): class-balanced by the base model's similarity to a
short description of each label, covering the pool (k-means), or at random."""

LABEL_DESCRIPTIONS: dict[str, str] = {
    "negative": "terrible service, I am angry and frustrated",
    "neutral": "I have a question about my order or booking",
    "positive": "thank you so much, great service, love it",
}
"""The zero-shot cold start's description of each label, in the customer's voice (chosen on
the airline dev.csv over third-person descriptions; see docs/benchmarks/label_efficiency.md);
SENTILOOP_LABEL_DESCRIPTIONS replaces them, e.g. in the language of the chats."""

CONSENSUS_METHODS: tuple[str, str, str] = ("dawid-skene", "crowdlab", "majority")
"""How the answers of several annotators become one label (quality.consensus implements
each; SENTILOOP_CONSENSUS_METHOD picks one; stored with each consensus)."""

PII_MODES: tuple[str, str] = ("mask-for-annotators", "mask-at-ingest")
"""Where personal data is masked (SENTILOOP_PII): only in what people see, the store keeping
the original for the model; or on the way in, so the original never reaches the store."""

ROLES: tuple[str, ...] = ("viewer", "annotator-admin", "promoter", "admin")
"""Operator roles (`sentiloop operators create NAME --role R`)."""

PERMISSIONS: dict[str, tuple[str, ...]] = {
    "promote": ("promoter", "admin"),  # models promote, rollback, resume
    "keys": ("admin",),  # the service's API keys, the ML backend's key
    "erase": ("admin",),  # sentiloop erase
    "operators": ("admin",),  # operator accounts
    "annotators": ("annotator-admin", "admin"),  # an annotator's pseudonymous id
}
"""What each privileged action needs; a ``viewer`` (like anyone without a key) only reads."""


class SentiloopError(Exception):
    """The root of every error sentiloop raises on purpose: each package's own base class
    (StoreError, TrainingError, LabelingError, OrchestratorError, ConfigError) derives from
    it, so a caller (the CLI, a service) catches them all in one place and shows the message,
    which is written for the user, instead of a traceback."""
