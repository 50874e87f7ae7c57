"""The label-driven loop's decisions on a real SQLite store: what counts as new (by
annotation revision), when a retrain is due, and how requests coalesce."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator import live
from store import AnnotationIn, ChatIn, Store, TrainingExample, utcnow
from tests.conftest import make_context, version_row

pytestmark = pytest.mark.unit


def _label(store: Store, ids: range, label: str = "negative", minutes_ago: float = 0) -> None:
    """Chats and one annotation each (annotation id = chat number + 1000)."""
    store.add_chats([ChatIn(f"c{i}", f"chat {i}", {}, None) for i in ids])
    by_source = store.chat_ids_by_source([f"c{i}" for i in ids])
    at = utcnow() - timedelta(minutes=minutes_ago)
    store.upsert_annotations(
        1,
        [
            AnnotationIn(1000 + i, 2000 + i, by_source[f"c{i}"], label, "ann", False, at, at)
            for i in ids
        ],
    )


def _version(store: Store, n: int, learned: list[TrainingExample], **fields: object) -> None:
    store.add_version(
        version_row(
            n,
            annotation_ids=sorted(e.annotation_id for e in learned),
            annotation_revisions={str(e.record_id): e.revision for e in learned},
            **fields,
        )
    )


def _trained(store: Store) -> list[TrainingExample]:
    return store.training_examples()


def test_an_edited_label_is_new_for_the_next_version_even_if_edited_during_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, eval_file=str(_eval_file(tmp_path)))
    store = ctx.store
    _label(store, range(10))
    learned = _trained(store)  # what a version read when it started training
    # the annotator edits chat 3 while it trains: the edit is pulled before the version is
    # registered, so comparing times with the version's creation would miss it
    _label_edit(store, 3, "positive")
    _version(store, 1, learned)
    store.promote(1, actor="t")
    waiting = live.waiting_labels(ctx)
    assert [(e.annotation_id, e.revision, e.label) for e in waiting] == [(1003, 2, "positive")]
    ctx.store.dispose()


def test_versions_without_revisions_fall_back_to_their_creation_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, eval_file=str(_eval_file(tmp_path)))
    store = ctx.store
    _label(store, range(5), minutes_ago=10)
    store.add_version(version_row(1, annotation_ids=[1000 + i for i in range(5)]))
    store.promote(1, actor="t")
    assert live.waiting_labels(ctx) == []
    _label_edit(store, 2, "neutral")  # pulled after v1 was made
    assert [e.annotation_id for e in live.waiting_labels(ctx)] == [1002]
    ctx.store.dispose()


def test_a_reset_label_studio_reuses_annotation_ids_but_its_labels_are_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, eval_file=str(_eval_file(tmp_path)))
    store = ctx.store
    _label(store, range(3))
    _version(store, 1, _trained(store))
    store.promote(1, actor="t")
    # a new Label Studio instance numbers its annotations from the start again
    store.add_chats([ChatIn("new", "a chat labelled after the reset", {}, None)])
    chat = store.chat_ids_by_source(["new"])["new"]
    at = utcnow()
    store.upsert_annotations(
        1, [AnnotationIn(1000, 9000, chat, "neutral", "ann", False, at, at)], "reset"
    )
    assert [e.chat_id for e in live.waiting_labels(ctx)] == [chat]
    ctx.store.dispose()


def test_a_retrain_is_due_after_enough_labels_or_when_one_waited_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(
        tmp_path,
        monkeypatch,
        eval_file=str(_eval_file(tmp_path)),
        retrain_after_labels="5",
        retrain_max_wait_seconds="600",
    )
    store = ctx.store
    _label(store, range(10))
    _version(store, 1, _trained(store))
    store.promote(1, actor="t")
    assert live.retrain_due(ctx) == live.Due(False, "no new labels", 0)
    _label(store, range(10, 14), minutes_ago=1)
    due = live.retrain_due(ctx)
    assert not due.due and due.waiting == 4 and "waiting for 5" in due.reason
    assert live.retrain_due(ctx, now=utcnow() + timedelta(minutes=10)).due  # waited too long
    _label(store, range(14, 15))
    assert live.retrain_due(ctx) == live.Due(
        True, "5 new labels (SENTILOOP_RETRAIN_AFTER_LABELS)", 5
    )
    # a candidate waiting for a person (or refused by the gate) learned them: not again
    _version(store, 2, _trained(store), parent=1, mode="incremental")
    assert not live.retrain_due(ctx).due
    # ...but an incremental candidate refused by the gate asks for a full retrain at once
    store.set_gate(2, {"passed": False, "reason": "worse"})
    assert live.retrain_due(ctx) == live.Due(True, "incremental v2 failed the gate", 0)
    ctx.store.dispose()


def test_requests_coalesce_until_a_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(
        tmp_path, monkeypatch, eval_file=str(_eval_file(tmp_path)), retrain_after_labels="1"
    )
    store = ctx.store
    assert not live.pull_wanted(ctx)
    for _ in range(20):  # a burst of events
        live.ask_for_pull(store, "ANNOTATION_CREATED")
    assert live.pull_wanted(ctx)
    run = store.start_run("c1", "pull", "webhook")
    assert not live.pull_wanted(ctx)  # one pull answers the whole burst
    store.finish_run(run, "ok", {})
    live.ask_for_pull(store, "ANNOTATION_UPDATED")
    assert live.pull_wanted(ctx)

    _label(store, range(3))
    first = live.claim_retrain(ctx)
    assert first is not None and first.due
    assert live.claim_retrain(ctx) is None  # asked for already: no second retrain
    assert live.retrain_requested(ctx)
    assert not live.retrain_requested(ctx, now=utcnow() + live.LOST_AFTER + timedelta(minutes=1))
    store.start_run("c2", "retrain", "labels")
    assert not live.retrain_requested(ctx)
    ctx.store.dispose()


def _label_edit(store: Store, i: int, label: str) -> None:
    chat_id = store.chat_ids_by_source([f"c{i}"])[f"c{i}"]
    at = utcnow()
    store.upsert_annotations(
        1, [AnnotationIn(1000 + i, 2000 + i, chat_id, label, "ann", False, at, at)]
    )


def _eval_file(tmp_path: Path) -> Path:
    """An evaluation file, so no label is held out of training."""
    path = tmp_path / "eval.csv"
    path.write_text("chat_id,text,label\ne1,fine,positive\ne2,bad,negative\ne3,ok,neutral\n")
    return path
