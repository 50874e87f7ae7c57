"""Exceptions raised by the labeling package.

They carry one-line, actionable messages (service, URL, setting to check) so the CLI can
print them verbatim instead of a traceback.
"""

from __future__ import annotations

from domain import SentiloopError

__all__ = [
    "LabelStudioAuthError",
    "LabelStudioStartError",
    "LabelStudioUnavailable",
    "LabelingError",
]


class LabelingError(SentiloopError):
    """Base class so callers can catch every labeling failure at once."""


class LabelStudioUnavailable(LabelingError):
    """Label Studio could not be reached (connection refused, timeout, DNS)."""

    def __init__(self, url: str, reason: str, where: str = "SENTILOOP_LABEL_STUDIO_URL") -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Label Studio unreachable at {url} ({where}): {reason}")


class LabelStudioAuthError(LabelingError):
    """Label Studio rejected the API token (HTTP 401/403)."""

    def __init__(self, url: str, status_code: int) -> None:
        self.url = url
        self.status_code = status_code
        super().__init__(
            f"Label Studio at {url} rejected the API token (HTTP {status_code}); "
            "check SENTILOOP_LABEL_STUDIO_TOKEN"
        )


class LabelStudioStartError(LabelingError):
    """The local Label Studio server could not be started or never became healthy."""
