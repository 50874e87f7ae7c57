"""Stable pseudonymous ids for annotators: the store keeps who labelled what (for agreement
and quality) without their e-mail addresses. A keyed hash, so an id cannot be reversed, or
confirmed from a guessed address, without the key."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["PSEUDONYM_PREFIX", "is_pseudonym", "pseudonym"]

PSEUDONYM_PREFIX = "ann_"
_DIGITS = 16  # 64 bits: no two annotators of one installation share an id


def pseudonym(key: bytes, identity: str) -> str:
    """The id of the annotator known as ``identity`` (an e-mail: case and spaces ignored)."""
    digest = hmac.new(key, identity.strip().casefold().encode("utf-8"), hashlib.sha256)
    return PSEUDONYM_PREFIX + digest.hexdigest()[:_DIGITS]


def is_pseudonym(value: str) -> bool:
    rest = value.removeprefix(PSEUDONYM_PREFIX)
    return rest != value and len(rest) == _DIGITS and all(c in "0123456789abcdef" for c in rest)
