"""The errors of :mod:`privacy`, under the project's root exception."""

from __future__ import annotations

from domain import SentiloopError


class PrivacyError(SentiloopError):
    """Base class of every error raised by :mod:`privacy`."""


class PatternError(PrivacyError):
    """A configured reference pattern is not usable (its name or its regular expression)."""
