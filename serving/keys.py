"""API keys: random tokens shown once; the store keeps only their sha256.

A key has 256 random bits, so a plain sha256 (no salt, no slow hash) is enough to make a
leaked table useless, and it lets the service find a key by its hash in one dict lookup.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["KEY_PREFIX", "hash_key", "new_key"]

KEY_PREFIX = "slk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key(prefix: str = KEY_PREFIX) -> tuple[str, str, str]:
    """(the key, its hash, its first characters for telling keys apart)."""
    key = prefix + secrets.token_urlsafe(32)
    return key, hash_key(key), key[:10]
