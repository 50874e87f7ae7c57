"""The service's pure parts: routing rules, conversation history, keys, micro-batching, and
the store's key and shadow tables."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from serving import ConversationBook, RoutingPolicy, Turn, decide, hash_key, new_key
from serving.batcher import MicroBatcher
from serving.errors import NotReady
from store import ShadowCounts, Store, StoreError

pytestmark = pytest.mark.unit

POLICY = RoutingPolicy(strong_negative=0.9, low_mean=0.3, fall=0.4, window=3, min_turns=2)


def turns(*scores: float, p_neg: float = 0.2) -> list[Turn]:
    return [Turn(f"m{i}", s, p_neg, float(i)) for i, s in enumerate(scores)]


def test_no_turn_is_normal() -> None:
    assert decide([], POLICY).decision == "normal"


def test_a_strongly_negative_latest_turn_escalates_at_once() -> None:
    d = decide([Turn("a", 0.6, 0.95, 0.0)], POLICY)
    assert d.decision == "escalate" and "strongly negative" in d.reason


def test_one_low_turn_is_not_enough_for_the_window_rule() -> None:
    assert decide(turns(0.1), POLICY).decision == "normal"  # min_turns 2
    d = decide(turns(0.25, 0.2), POLICY)
    assert d.decision == "escalate" and "mean 0.23" in d.reason


def test_the_window_only_looks_at_the_last_turns() -> None:
    # old anger, now calm: the three last turns average 0.7
    assert decide(turns(0.0, 0.0, 0.0, 0.7, 0.7, 0.7), POLICY).decision == "normal"


def test_a_falling_score_escalates() -> None:
    d = decide(turns(0.9, 0.8, 0.3), POLICY)  # mean 0.67: only the fall rule fires
    assert d.decision == "escalate" and "fell from 0.90 to 0.30" in d.reason
    assert decide(turns(0.9, 0.8, 0.45), POLICY).decision == "normal"  # latest not low


def test_the_book_ignores_a_repeated_message_and_keeps_sent_order() -> None:
    book = ConversationBook()
    book.record("c", Turn("b", 0.2, 0.1, 20.0), now=0)
    book.record("c", Turn("a", 0.9, 0.1, 10.0), now=1)  # arrives late, was sent first
    book.record("c", Turn("b", 0.2, 0.1, 20.0), now=2)  # a retry
    assert [t.message_id for t in book.turns("c", now=3)] == ["a", "b"]


def test_the_book_is_bounded_in_turns_conversations_and_time() -> None:
    book = ConversationBook(max_conversations=2, max_turns=3, ttl_seconds=100)
    for i in range(5):
        book.record("c", Turn(f"m{i}", 0.5, 0.1, float(i)), now=0)
    assert [t.message_id for t in book.turns("c", now=0)] == ["m2", "m3", "m4"]
    book.record("d", Turn("x", 0.5, 0.1, 0.0), now=1)
    book.record("c", Turn("m5", 0.5, 0.1, 5.0), now=2)  # c is now the most recent
    book.record("e", Turn("y", 0.5, 0.1, 0.0), now=3)  # evicts d, the least recent
    assert book.turns("d", now=3) == [] and len(book) == 2
    assert book.turns("c", now=101) != []  # touched at 2
    assert book.turns("c", now=103) == [] and len(book) == 0  # expired


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    key, key_hash, prefix = new_key()
    other, _, _ = new_key()
    assert key != other and key.startswith("slk_") and len(key) > 40
    assert key_hash == hash_key(key) and key not in key_hash and key.startswith(prefix)


def test_store_keys_create_revoke_and_reuse_a_name(sqlite_store: Store) -> None:
    _, h1, p1 = new_key()
    sqlite_store.add_api_key("platform", h1, p1)
    with pytest.raises(StoreError, match="revoke it first"):
        sqlite_store.add_api_key("platform", new_key()[1], "x")
    assert sqlite_store.active_api_keys() == {h1: "platform"}
    assert sqlite_store.revoke_api_key("platform") is True
    assert sqlite_store.revoke_api_key("platform") is False
    assert sqlite_store.active_api_keys() == {}
    _, h2, p2 = new_key()
    sqlite_store.add_api_key("platform", h2, p2)  # the name is free again
    assert sqlite_store.active_api_keys() == {h2: "platform"}
    assert [k.revoked_at is None for k in sqlite_store.api_keys()] == [False, True]


def test_store_shadow_counts_add_up(sqlite_store: Store) -> None:
    sqlite_store.add_shadow_counts(ShadowCounts(3, 1, 10, 8, 2, 1))
    sqlite_store.add_shadow_counts(ShadowCounts(3, 1, 5, 5, 0, 1))
    sqlite_store.add_shadow_counts(ShadowCounts(3, 2, 4, 4, 0, 0))
    sqlite_store.add_shadow_counts(ShadowCounts(3, 2, 0, 0, 0, 0))  # nothing: no write
    rows = [
        (s.production, s.messages, s.agreed, s.escalated, s.production_escalated)
        for s in sqlite_store.shadow_stats(3)
    ]
    assert rows == [(1, 15, 13, 2, 2), (2, 4, 4, 0, 0)]
    assert sqlite_store.shadow_stats(4) == []


@dataclass(frozen=True)
class FakeModel:
    """Stands in for a loaded checkpoint: the batching logic is what is tested here."""

    version: int
    calls: list[int]

    def predict(self, texts: list[str]) -> npt.NDArray[np.float64]:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 3))
        out[:, 0] = [float(t.split(":")[1]) for t in texts]
        out[:, 2] = 1 - out[:, 0]
        return out


def test_requests_arriving_together_are_scored_together_and_each_gets_its_rows() -> None:
    calls: list[int] = []
    model: Any = FakeModel(7, calls)

    async def main() -> list[Any]:
        batcher = MicroBatcher(lambda: model, max_batch=64, max_wait_s=0.05)
        batcher.start()
        jobs = [batcher.score([f"r{i}:0.{i}", f"r{i}:0.0{i}"]) for i in range(1, 6)]
        results = await asyncio.gather(*jobs)
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert calls == [10]  # five requests, one model call
    for i, scored in enumerate(results, start=1):
        assert scored.model.version == 7
        assert scored.probs[:, 0].tolist() == pytest.approx([i / 10, i / 100])


def test_the_batch_is_capped_and_nothing_is_lost_on_stop() -> None:
    calls: list[int] = []
    model: Any = FakeModel(1, calls)

    async def main() -> int:
        batcher = MicroBatcher(lambda: model, max_batch=4, max_wait_s=0.05)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.score([f"x:0.{i}"])) for i in range(10)]
        await asyncio.sleep(0)
        await batcher.stop()  # graceful: what was queued is answered
        return sum(1 for p in pending if p.done() and not p.exception())

    assert asyncio.run(main()) == 10
    assert max(calls) <= 4 and sum(calls) == 10


def test_no_model_yet_is_a_clear_error() -> None:
    async def main() -> None:
        batcher = MicroBatcher(lambda: None)
        batcher.start()
        try:
            await batcher.score(["x:0.1"])
        finally:
            await batcher.stop()

    with pytest.raises(NotReady):
        asyncio.run(main())


def test_a_lone_request_does_not_wait_for_company() -> None:
    calls: list[int] = []
    model: Any = FakeModel(1, calls)

    async def main() -> None:
        # a wait of a minute, but nobody else is on the way: answered at once
        batcher = MicroBatcher(lambda: model, max_wait_s=60, arriving=lambda: 1)
        batcher.start()
        await asyncio.wait_for(batcher.score(["x:0.5"]), timeout=10)
        await batcher.stop()

    asyncio.run(main())
    assert calls == [1]


def test_the_newest_candidate_above_production_is_the_shadow(sqlite_store: Store) -> None:
    import uuid

    from store import ModelVersion

    for n in (1, 2, 3, 4):
        sqlite_store.add_version(
            ModelVersion(
                number=n,
                base_model="b",
                checkpoint_path=f"/m/v{n}",
                weights_sha256="0" * 64,
                data_fingerprint=uuid.uuid4().hex,
            )
        )
    sqlite_store.promote(2, actor="t")
    sqlite_store.mark_checkpoint_deleted(4)
    assert sqlite_store.newest_candidate(2).number == 3  # type: ignore[union-attr]
    sqlite_store.promote(3, actor="t")
    assert sqlite_store.newest_candidate(3) is None  # v4's files are gone; v1, v2 are older


def test_the_ml_backend_reads_the_project_labeling_config() -> None:
    from domain import LABELS
    from labeling import LABEL_CONFIG
    from serving.ml_backend import Interface, interface

    assert interface(LABEL_CONFIG) == Interface("sentiment", "text", "text", LABELS)
    assert interface(None) == interface("<View><broken") == Interface()
    custom = """<View><Text name="msg" value="$message"/>
      <Choices name="mood" toName="msg">
        <Choice value="Angry" alias="negative"/><Choice value="Neutral"/>
        <Choice value="Positive"/></Choices></View>"""
    assert interface(custom) == Interface(
        "mood", "msg", "message", ("negative", "Neutral", "Positive")
    )
