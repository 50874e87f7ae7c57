"""What the service does, apart from HTTP: classify, remember customer turns, route, follow
the registry, shadow-score the candidate and (optionally) feed the pool."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from domain import LABELS
from serving.batcher import MicroBatcher
from serving.errors import LimitExceeded, NotReady
from serving.feed import PoolFeed
from serving.follower import ModelFollower, ServedModel
from serving.metrics import Metrics
from serving.routing import ConversationBook, Decision, RoutingPolicy, Turn, decide, epoch
from serving.schemas import MessageIn, MessageOut, RouteResponse
from serving.shadow import Shadow
from store import Store
from training import Scorer

__all__ = ["Limits", "Service", "ServiceOptions", "scorer_factory"]

logger = logging.getLogger(__name__)

_NEGATIVE = LABELS.index("negative")


@dataclass(frozen=True)
class Limits:
    max_messages: int = 256
    max_text_chars: int = 5000


@dataclass(frozen=True)
class ServiceOptions:
    """Everything the service is tuned by (built from the settings by the CLI)."""

    limits: Limits
    policy: RoutingPolicy
    poll_seconds: float = 1.0
    retry_seconds: float = 30.0
    max_batch: int = 64
    batch_wait_s: float = 0.002
    shadow_share: float = 0.1
    feed_pool: bool = False
    history_turns: int = 20
    history_ttl_seconds: float = 3600.0
    max_conversations: int = 100_000
    #: Where the store only holds masked text (SENTILOOP_PII=mask-at-ingest), the models were
    #: trained on it: messages are masked the same way before they are scored or kept.
    mask: Callable[[str], str] | None = None


class Service:
    def __init__(self, store: Store, make_scorer: Any, options: ServiceOptions) -> None:
        self.store = store
        self.options = options
        self.metrics = Metrics()
        self.follower = ModelFollower(
            store,
            make_scorer,
            self.metrics,
            poll_seconds=options.poll_seconds,
            retry_seconds=options.retry_seconds,
            shadow=options.shadow_share > 0,
        )
        self.shadow = Shadow(
            store,
            lambda: self.follower.candidate,
            share=options.shadow_share,
            strong_negative=options.policy.strong_negative,
            on_scored=self.metrics.shadow_messages.inc,
            on_dropped=self.metrics.shadow_dropped.inc,
        )
        self.feed = PoolFeed(store) if options.feed_pool else None
        self.book = ConversationBook(
            max_conversations=options.max_conversations,
            max_turns=options.history_turns,
            ttl_seconds=options.history_ttl_seconds,
        )
        self.batcher: MicroBatcher | None = None
        #: API requests received and not yet answered (kept by the HTTP layer)
        self.in_flight = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.follower.start)
        self.shadow.start()
        if self.feed is not None:
            self.feed.start()
        self.batcher = MicroBatcher(
            lambda: self.follower.current,
            max_batch=self.options.max_batch,
            max_wait_s=self.options.batch_wait_s,
            on_batch=self._observe,
            arriving=lambda: self.in_flight,
        )
        self.batcher.start()

    async def stop(self) -> None:
        """After the server finished its in-flight requests: drain, flush, stop threads."""
        if self.batcher is not None:
            await self.batcher.stop()
        await asyncio.to_thread(self.follower.stop)
        await asyncio.to_thread(self.shadow.stop)
        if self.feed is not None:
            await asyncio.to_thread(self.feed.stop)

    def _observe(
        self, model: ServedModel, texts: list[str], probs: npt.NDArray[np.float64]
    ) -> None:
        self.metrics.batch_size.observe(len(texts))
        self.shadow.offer(model, texts, probs)

    # -- state ------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        follower = self.follower
        current = follower.current
        self.metrics.target_version.set(follower.target or 0)
        body: dict[str, Any] = {
            "ready": current is not None,
            "model_version": current.version if current is not None else None,
            "production_version": follower.target,
            "reload_error": follower.last_error,
            "registry_error": follower.registry_error,
        }
        if current is None:
            body["reason"] = (
                "no production version in the registry yet"
                if follower.target is None
                else f"v{follower.target} is not loaded: see reload_error"
            )
        return current is not None, body

    def key_name(self, key_hash: str) -> str | None:
        return self.follower.keys.get(key_hash)

    # -- requests ---------------------------------------------------------------------------------

    def check_limits(self, messages: list[MessageIn]) -> None:
        limits = self.options.limits
        if len(messages) > limits.max_messages:
            raise LimitExceeded(
                f"{len(messages)} messages in one request; the limit is {limits.max_messages} "
                "(SENTILOOP_SERVE_MAX_MESSAGES)"
            )
        for i, m in enumerate(messages):
            if len(m.text) > limits.max_text_chars:
                raise LimitExceeded(
                    f"messages[{i}].text has {len(m.text):,} characters; the limit is "
                    f"{limits.max_text_chars:,} (SENTILOOP_SERVE_MAX_TEXT_CHARS)"
                )

    async def classify(self, messages: list[MessageIn]) -> tuple[ServedModel, list[MessageOut]]:
        self.check_limits(messages)
        assert self.batcher is not None
        texts = [m.text for m in messages]
        mask = self.options.mask
        if mask is not None:
            texts = await asyncio.to_thread(lambda: [mask(t) for t in texts])
        scored = await self.batcher.score(texts)
        model, probs = scored.model, scored.probs
        labels = probs.argmax(axis=1)
        scores = probs[:, 2] + 0.5 * probs[:, 1]
        now = time.time()
        out: list[MessageOut] = []
        for i, m in enumerate(messages):
            label = LABELS[int(labels[i])]
            self.metrics.predictions.labels(label).inc()
            out.append(
                MessageOut(
                    id=m.id,
                    label=label,
                    probabilities=dict(zip(LABELS, probs[i].round(6).tolist(), strict=True)),
                    score=round(float(scores[i]), 6),
                    model_version=model.version,
                    conversation_id=m.conversation_id,
                    speaker=m.speaker,
                )
            )
            if m.speaker == "customer":
                if m.conversation_id is not None:
                    self.book.record(
                        m.conversation_id,
                        Turn(
                            m.id,
                            float(scores[i]),
                            float(probs[i, _NEGATIVE]),
                            epoch(m.sent_at, now),
                        ),
                    )
                if self.feed is not None:
                    self.feed.offer(m.id, texts[i], m.conversation_id, m.sent_at)
        return model, out

    async def route(self, conversation_id: str, messages: list[MessageIn]) -> RouteResponse:
        for i, m in enumerate(messages):
            if m.conversation_id not in (None, conversation_id):
                raise LimitExceeded(
                    f"messages[{i}].conversation_id differs from the request's conversation_id"
                )
        messages = [m.model_copy(update={"conversation_id": conversation_id}) for m in messages]
        results: list[MessageOut] = []
        version = self.follower.version_in_service
        if messages:
            model, results = await self.classify(messages)
            version = model.version
        elif version is None:
            raise NotReady("no verified model in service yet")
        decision: Decision = decide(self.book.turns(conversation_id), self.options.policy)
        if decision.decision == "escalate":
            self.metrics.escalations.inc()
        return RouteResponse(
            conversation_id=conversation_id,
            decision=decision.decision,
            reason=decision.reason,
            customer_turns=decision.turns,
            model_version=version,
            results=results,
        )


def scorer_factory(*, device: str, batch_size: int | None, max_length: int, precision: str) -> Any:
    """How the service builds a scorer for a checkpoint (the settings' device and precision)."""

    def make(path: str) -> Scorer:
        return Scorer(
            path, device=device, batch_size=batch_size, max_length=max_length, precision=precision
        )

    return make
