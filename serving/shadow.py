"""Shadow scoring: a share of live traffic is also scored by the candidate version, off the
request path, so whoever promotes sees how it behaves on real chats (``models show N``)."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain import LABELS
from serving.follower import ServedModel
from serving.memory import Trimmer
from store import ShadowCounts, Store

__all__ = ["Shadow"]

logger = logging.getLogger(__name__)

_NEGATIVE = LABELS.index("negative")
#: Texts the candidate scores in one call at most.
_BATCH = 64


@dataclass
class _Item:
    production: int
    texts: list[str]
    probs: npt.NDArray[np.float64]


class Shadow:
    """Samples ``share`` of the scored messages into a bounded queue (dropping, never
    blocking, when it is full); a thread scores them with the candidate and adds the counts
    to the store every ``flush_seconds``. A message counts as escalated when its
    P(negative) reaches ``strong_negative`` (the per-turn routing rule)."""

    def __init__(
        self,
        store: Store,
        candidate: Callable[[], ServedModel | None],
        *,
        share: float,
        strong_negative: float,
        flush_seconds: float = 5.0,
        max_queue: int = 256,
        on_scored: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.candidate = candidate
        self.share = share
        self.strong_negative = strong_negative
        self.flush_seconds = flush_seconds
        self.on_scored = on_scored
        self.on_dropped = on_dropped
        self._rng = random.Random(seed)
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._totals: dict[tuple[int, int], list[int]] = {}
        self.trimmer = Trimmer()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentiloop-shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
        self._flush()

    def offer(self, model: ServedModel, texts: list[str], probs: npt.NDArray[np.float64]) -> None:
        """Called after every production batch (on the event loop: must not block)."""
        if self.share <= 0 or self.candidate() is None:
            return
        picked = [i for i in range(len(texts)) if self._rng.random() < self.share]
        if not picked:
            return
        item = _Item(model.version, [texts[i] for i in picked], probs[picked])
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if self.on_dropped is not None:
                self.on_dropped(len(picked))

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                pass
            else:
                items, stopping = self._drain(item)
                try:
                    self._score(items)
                except Exception:
                    logger.exception("shadow scoring failed")
                if stopping:
                    return
            if time.monotonic() - last_flush >= self.flush_seconds:
                self._flush()
                last_flush = time.monotonic()

    def _drain(self, first: _Item | None) -> tuple[list[_Item], bool]:
        """The first item and whatever else waits, up to a batch (one model call for all:
        a call per sampled request cost 2.6x the candidate's time per message)."""
        items: list[_Item] = []
        item = first
        size = 0
        while item is not None:
            items.append(item)
            size += len(item.texts)
            if size >= _BATCH:
                return items, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items, False
        return items, True

    def _score(self, items: list[_Item]) -> None:
        candidate = self.candidate()
        items = [i for i in items if candidate is not None and candidate.version > i.production]
        if candidate is None or not items:
            return
        probs = candidate.predict([t for i in items for t in i.texts])
        self.trimmer.maybe()
        start = 0
        for item in items:
            mine = probs[start : start + len(item.texts)]
            start += len(item.texts)
            agreed = int(np.sum(mine.argmax(axis=1) == item.probs.argmax(axis=1)))
            escalated = int(np.sum(mine[:, _NEGATIVE] >= self.strong_negative))
            production_escalated = int(np.sum(item.probs[:, _NEGATIVE] >= self.strong_negative))
            totals = self._totals.setdefault((candidate.version, item.production), [0, 0, 0, 0])
            for i, n in enumerate((len(item.texts), agreed, escalated, production_escalated)):
                totals[i] += n
        if self.on_scored is not None:
            self.on_scored(start)

    def _flush(self) -> None:
        pending, self._totals = self._totals, {}
        for (version, production), (n, agreed, esc, prod_esc) in pending.items():
            try:
                self.store.add_shadow_counts(
                    ShadowCounts(version, production, n, agreed, esc, prod_esc)
                )
            except Exception as exc:  # keep the counts for the next flush
                logger.warning("could not store shadow counts (%s)", type(exc).__name__)
                merged = self._totals.setdefault((version, production), [0, 0, 0, 0])
                for i, x in enumerate((n, agreed, esc, prod_esc)):
                    merged[i] += x
