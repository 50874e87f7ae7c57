"""The label-quality package's errors, under the project's root exception."""

from __future__ import annotations

from domain import SentiloopError


class QualityError(SentiloopError):
    """Labels or probabilities that cannot be judged (an unknown label, a wrong shape)."""
