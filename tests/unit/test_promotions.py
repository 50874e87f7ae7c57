"""Promotions compare-and-swap, rollback walks the production history, and a manual rollback
pauses automatic promotion (issue #12, item 5)."""

from __future__ import annotations

import pytest

from store import PromotionConflict, Store, StoreError
from tests.conftest import version_row

pytestmark = pytest.mark.unit


def _versions(store: Store, *numbers: int) -> None:
    for n in numbers:
        store.add_version(version_row(n))


def _production(store: Store) -> int | None:
    production = store.production()
    return production.number if production else None


def test_a_promotion_gated_against_an_old_production_changes_nothing(sqlite_store: Store) -> None:
    _versions(sqlite_store, 1, 2, 3)
    sqlite_store.promote(1, actor="t")
    sqlite_store.promote(2, actor="t", expected=1)
    # a retrain compared v3 against v2 ... and meanwhile a person rolled back to v1
    sqlite_store.rollback(actor="carol", reason="v2 misroutes refunds")
    with pytest.raises(PromotionConflict, match="production is v1, not v2"):
        sqlite_store.promote(3, actor="scheduler", expected=2)
    assert _production(sqlite_store) == 1
    assert len(sqlite_store.promotions()) == 3
    with pytest.raises(PromotionConflict, match="production is v1, not none"):
        sqlite_store.promote(3, actor="scheduler", expected=None)


def test_rollback_walks_back_through_the_history(sqlite_store: Store) -> None:
    _versions(sqlite_store, 1, 2, 3)
    for n in (1, 2, 3):
        sqlite_store.promote(n, actor="t")
    assert sqlite_store.production_history() == [1, 2, 3]
    assert sqlite_store.rollback(actor="t").version == 2
    assert sqlite_store.rollback(actor="t").version == 1  # a second rollback goes further back
    assert _production(sqlite_store) == 1
    with pytest.raises(StoreError, match="nothing to roll back to"):
        sqlite_store.rollback(actor="t")


def test_promoting_the_current_production_keeps_the_rollback_target(sqlite_store: Store) -> None:
    _versions(sqlite_store, 1, 2)
    sqlite_store.promote(1, actor="t")
    sqlite_store.promote(2, actor="t")
    sqlite_store.promote(2, actor="t")  # again: recorded, changes nothing
    assert sqlite_store.rollback_target() == 1
    assert sqlite_store.rollback(actor="t").version == 1


def test_a_manual_rollback_pauses_automatic_promotion_until_resumed(sqlite_store: Store) -> None:
    _versions(sqlite_store, 1, 2)
    sqlite_store.promote(1, actor="t")
    sqlite_store.promote(2, actor="t")
    assert sqlite_store.auto_promotion_paused() is None
    sqlite_store.rollback(actor="carol", reason="angry customers routed wrong")
    paused = sqlite_store.auto_promotion_paused()
    assert paused is not None
    assert (paused["by"], paused["reason"], paused["from"]) == (
        "carol",
        "angry customers routed wrong",
        2,
    )
    assert sqlite_store.resume_auto_promotion() is True
    assert sqlite_store.auto_promotion_paused() is None
    assert sqlite_store.resume_auto_promotion() is False
