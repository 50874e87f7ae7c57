"""Give freed memory back to the system while serving.

A service scores batches of every size and length (1 to 64 messages, 5 to 64 tokens), so
torch allocates and frees tensors of ever new sizes from several threads. glibc keeps what
was freed in its heaps and arenas, and RSS crept up with every new shape: measured with the
int8 scorer alone on random batches of 1-32 airline tweets, 548 MB -> 893 MB after 500 batches
and still rising. ``malloc_trim(0)`` every 100 batches kept it at 595-600 MB at the same speed
(docs/benchmarks/serving.md). Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from typing import Any

__all__ = ["Trimmer"]

logger = logging.getLogger(__name__)


def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


class Trimmer:
    """``maybe()`` after each model call: trims at most every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._trim = _malloc_trim()
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def maybe(self) -> None:
        if self._trim is None or time.monotonic() - self._last < self.interval_s:
            return
        with self._lock:
            self._last = time.monotonic()
            self._trim(0)
