"""Customer data kept private: personal data masked before people see a chat, annotators
known by pseudonymous ids.

Knows no store, Celery, Label Studio or torch: the orchestrator decides where masking applies.
"""

from privacy.errors import PatternError, PrivacyError
from privacy.masking import DEFAULT_PHONE_REGIONS, PLACEHOLDERS, Masker, Span
from privacy.pseudonyms import PSEUDONYM_PREFIX, is_pseudonym, pseudonym

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "PLACEHOLDERS",
    "PSEUDONYM_PREFIX",
    "Masker",
    "PatternError",
    "PrivacyError",
    "Span",
    "is_pseudonym",
    "pseudonym",
]
