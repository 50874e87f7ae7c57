"""Erasure on request and pseudonymous annotators, on a real SQLite store (the Label Studio
side is tested against a real server in tests/integration/test_privacy.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.access import create_operator
from orchestrator.erasure import erase, versions_with_erased
from orchestrator.errors import StepError
from privacy import is_pseudonym, pseudonym
from store import Annotation, AnnotationIn, ChatIn, ErasureIn, Store, StoreError
from tests.conftest import make_context, version_row

pytestmark = pytest.mark.unit


def _labelled(store: Store, n: int) -> dict[str, int]:
    """``n`` chats of two customers, each labelled once; chat ids by source id."""
    store.add_chats(
        [ChatIn(f"c{i}", f"chat {i}", {"customer_id": f"cust-{i % 2}"}, None) for i in range(n)]
    )
    ids = store.chat_ids_by_source([f"c{i}" for i in range(n)])
    t = datetime(2026, 1, 1, tzinfo=UTC)
    store.upsert_annotations(
        1,
        [
            AnnotationIn(i, 100 + i, ids[f"c{i}"], "negative", "a@example.com", False, t, t)
            for i in range(n)
        ],
    )
    return ids


def test_erasing_removes_the_chats_and_all_made_from_them_and_keeps_an_audit(
    sqlite_store: Store,
) -> None:
    ids = _labelled(sqlite_store, 6)
    before = {e.chat_id for e in sqlite_store.training_examples()}
    gone = sqlite_store.chat_ids_of_customer("customer_id", "cust-1")
    assert sorted(gone) == sorted(ids[f"c{i}"] for i in (1, 3, 5))
    erasure = sqlite_store.erase_chats(gone, ErasureIn("root", None, "request 7", "customer"))
    assert (erasure.chats, erasure.annotations, erasure.actor) == (3, 3, "root")
    assert set(sqlite_store.chats_by_id(list(ids.values()))) == before - set(gone)
    assert {e.chat_id for e in sqlite_store.training_examples()} == before - set(gone)
    assert sqlite_store.chat_ids_of_customer("customer_id", "cust-1") == []
    assert [e.id for e in sqlite_store.erasures()] == [erasure.id]
    # the audit keeps counts and ids, never a chat's text or source id
    assert "chat 1" not in repr(erasure) and "'c1'" not in repr(erasure)


def test_an_erased_chat_brought_again_is_refused_with_its_reason(sqlite_store: Store) -> None:
    ids = _labelled(sqlite_store, 4)
    erasure = sqlite_store.erase_chats([ids["c2"]], ErasureIn("root", None, "", "chat"))
    again = sqlite_store.add_chats(
        [ChatIn("c2", "chat 2", {}, None, row=3), ChatIn("c9", "new", {}, None, row=4)]
    )
    assert again.inserted == 1
    assert again.refused == ((3, f"erased on request (erasure #{erasure.id})"),)
    assert "c2" not in sqlite_store.chat_ids_by_source(["c2", "c9"])


def test_versions_that_learned_erased_chats_are_named_and_retrain_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.retrain import choose_mode

    ctx = make_context(tmp_path, monkeypatch)
    ids = _labelled(ctx.store, 4)
    learned = [a.record_id for a in ctx.store.training_examples()]
    ctx.store.add_version(version_row(1, annotation_ids=learned[:2]))
    ctx.store.add_version(version_row(2, annotation_ids=learned[2:]))
    ctx.store.add_version(version_row(3, annotation_ids=[], parent=1, mode="incremental"))
    ctx.store.promote(3, actor="setup")
    assert choose_mode(ctx, ctx.store.production())[0] == "incremental"
    first = ctx.store.training_examples()[0]
    admin = create_operator(ctx.settings, ctx.store, "root", "admin")[1]
    chat = next(s for s, i in ids.items() if i == first.chat_id)
    report = erase(ctx, by=admin, chats=[chat], reason="request 8")
    assert report.erasure.operator_id == admin.id and report.erasure.label_studio_tasks == 0
    # v1 learned it, v3 was warm-started from v1: both are named, v2 is not
    assert report.versions == [1, 3] == sorted(versions_with_erased(ctx))
    assert choose_mode(ctx, ctx.store.production()) == ("full", "v3 learned chats erased since")
    with pytest.raises(StepError, match="1 of the chat ids are not in the store"):
        erase(ctx, by=admin, chats=[chat])
    with pytest.raises(StepError, match="no chat has that customer key"):
        erase(ctx, by=admin, customer="nobody")
    with pytest.raises(StepError, match="--chat ID"):
        erase(ctx, by=admin)


def test_a_student_that_learned_an_erased_chat_unlabelled_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch)
    ids = _labelled(ctx.store, 2)
    ctx.store.add_chats([ChatIn("u1", "chat u1", {}, None), ChatIn("u2", "chat u2", {}, None)])
    pool = ctx.store.chat_ids_by_source(["u1", "u2"])
    learned = [a.record_id for a in ctx.store.training_examples()]
    ctx.store.add_version(version_row(1, status="teacher", annotation_ids=learned))
    ctx.store.add_version(
        version_row(2, teacher=1, annotation_ids=learned, pool_chat_ids=[pool["u2"]])
    )
    ctx.store.promote(2, actor="setup")
    admin = create_operator(ctx.settings, ctx.store, "root", "admin")[1]
    report = erase(ctx, by=admin, chats=["u1"], reason="not learned by anyone")
    assert report.erasure.chat_ids == [pool["u1"]] and versions_with_erased(ctx) == {}
    erase(ctx, by=admin, chats=["u2"], reason="learned unlabelled by v2")
    assert versions_with_erased(ctx) == {2: {2: 1}}
    erase(ctx, by=admin, chats=["c0"], reason="labelled: both learned it")
    assert sorted(versions_with_erased(ctx)) == [1, 2]
    assert ids


def test_annotators_get_stable_pseudonyms_under_the_stores_own_key(sqlite_store: Store) -> None:
    key = sqlite_store.pseudonym_key(None)
    assert sqlite_store.pseudonym_key(None) == key  # made once, kept
    one = pseudonym(key, "Ann@Example.com ")
    assert one == pseudonym(key, "ann@example.com") and is_pseudonym(one)
    assert "ann" not in one.removeprefix("ann_") and not is_pseudonym("ann@example.com")
    assert pseudonym(b"another key", "ann@example.com") != one
    with pytest.raises(StoreError, match="another key than SENTILOOP_PSEUDONYM_SECRET"):
        sqlite_store.pseudonym_key(b"a configured key")


def test_a_configured_key_must_stay_the_same(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.init()
    assert store.pseudonym_key(b"k1") == b"k1" == store.pseudonym_key(b"k1")
    with pytest.raises(StoreError, match=r"another key .* holds now: restore it"):
        store.pseudonym_key(b"k2")
    with pytest.raises(StoreError, match="configured key: set SENTILOOP_PSEUDONYM_SECRET again"):
        store.pseudonym_key(None)
    store.dispose()


def test_init_replaces_annotator_emails_pulled_before(sqlite_store: Store) -> None:
    _labelled(sqlite_store, 3)
    key = sqlite_store.pseudonym_key(None)
    changed = sqlite_store.rename_annotators(is_pseudonym, lambda n: pseudonym(key, n))
    assert changed == 3
    with sqlite_store.session() as s:
        names = set(s.exec(select(Annotation.annotator)).all())
    assert names == {pseudonym(key, "a@example.com")}
    assert sqlite_store.rename_annotators(is_pseudonym, lambda n: pseudonym(key, n)) == 0


def test_looking_up_an_annotator_writes_nothing(sqlite_store: Store) -> None:
    assert sqlite_store.kept_pseudonym_key(None) is None
    assert sqlite_store.kept_pseudonym_key(None) is None  # still nothing made
    key = sqlite_store.pseudonym_key(None)
    assert sqlite_store.kept_pseudonym_key(None) == key
