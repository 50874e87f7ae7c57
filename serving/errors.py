"""The service's errors (all under the project's root exception)."""

from __future__ import annotations

from domain import SentiloopError

__all__ = ["LimitExceeded", "NotReady", "ReloadError", "ServingError"]


class ServingError(SentiloopError):
    """Base of the service's errors."""


class ReloadError(ServingError):
    """A version could not be put in service (the old one keeps serving)."""


class NotReady(ServingError):
    """No verified model is in service yet."""


class LimitExceeded(ServingError):
    """A request over one of the limits; the message names the limit and its setting."""
