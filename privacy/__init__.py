"""Customer data kept private: personal data masked before people see a chat.

Knows no store, Celery, Label Studio or torch: the orchestrator decides where masking applies.
"""

from privacy.errors import PatternError, PrivacyError
from privacy.masking import DEFAULT_PHONE_REGIONS, PLACEHOLDERS, Masker, Span

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "PLACEHOLDERS",
    "Masker",
    "PatternError",
    "PrivacyError",
    "Span",
]
