"""Traffic feeds the loop (optional): served customer messages go into the pool, so the
model keeps learning from the chats it actually sees. Buffered and written by a thread:
the request path never waits for the database."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from store import ChatIn, Store
from store.ingest import validate_record

__all__ = ["PoolFeed", "pool_id"]

logger = logging.getLogger(__name__)


def pool_id(message_id: str, conversation_id: str | None) -> str:
    """The pool's chat id of a served message: prefixed, so it never overwrites an imported
    chat with the same id."""
    return f"live:{conversation_id}:{message_id}" if conversation_id else f"live:{message_id}"


class PoolFeed:
    def __init__(self, store: Store, *, flush_seconds: float = 2.0, max_buffer: int = 50_000):
        self.store = store
        self.flush_seconds = flush_seconds
        self.max_buffer = max_buffer
        self.written = 0
        self.dropped = 0
        self._buffer: list[ChatIn] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentiloop-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def offer(
        self, message_id: str, text: str, conversation_id: str | None, sent_at: datetime | None
    ) -> None:
        record: dict[str, object] = {
            "chat_id": pool_id(message_id, conversation_id),
            "text": text,
            "source": "service",
        }
        if conversation_id:
            record["conversation_id"] = conversation_id
        if sent_at is not None:
            record["created_at"] = sent_at.isoformat()
        chat = validate_record(0, record)
        if not isinstance(chat, ChatIn):
            return  # the service already refused what the pool would refuse
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1  # the store is down for long: bound memory, count the loss
                return
            self._buffer.append(chat)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            self.store.add_chats(batch)
            self.written += len(batch)
        except Exception as exc:  # keep them for the next flush
            logger.warning(
                "could not write %d served messages to the pool (%s)",
                len(batch),
                type(exc).__name__,
            )
            with self._lock:
                self._buffer = (batch + self._buffer)[: self.max_buffer]
