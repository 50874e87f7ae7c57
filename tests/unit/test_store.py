"""The store's idempotence rules, on a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from store import AnnotationIn, ChatIn, LeaseBusy, ModelVersion, PredictionIn, Store

pytestmark = pytest.mark.unit


def _chats(store: Store, n: int) -> list[int]:
    store.add_chats([ChatIn(str(i), f"chat number {i}", {"n": i}, None) for i in range(n)])
    return sorted(store.chat_ids_by_source([str(i) for i in range(n)]).values())


def _ann(ls_id: int, chat_id: int, label: str | None, minute: int, **kw: object) -> AnnotationIn:
    t = datetime(2026, 1, 1, 12, minute, tzinfo=UTC)
    return AnnotationIn(
        ls_annotation_id=ls_id,
        ls_task_id=1000 + chat_id,
        chat_id=chat_id,
        label=label,
        annotator=str(kw.get("annotator", "ann@example.com")),
        cancelled=bool(kw.get("cancelled", False)),
        created_at=t,
        updated_at=t,
    )


def test_init_is_repeatable_and_chats_upsert(sqlite_store: Store) -> None:
    sqlite_store.init()
    first = sqlite_store.add_chats([ChatIn("a", "hello", {}, None), ChatIn("b", "bye", {}, None)])
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    again = sqlite_store.add_chats([ChatIn("a", "hello", {}, None), ChatIn("b", "bye!", {}, None)])
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 1)


def test_predictions_are_written_once_per_chat_and_version(sqlite_store: Store) -> None:
    ids = _chats(sqlite_store, 5)
    rows = [PredictionIn(c, (0.2, 0.3, 0.5), "positive", 0.65, 0.9) for c in ids]
    assert sqlite_store.add_predictions(1, rows) == 5
    assert sqlite_store.add_predictions(1, rows) == 0
    assert _unscored(sqlite_store, 1) == []
    assert _unscored(sqlite_store, 2) == ids
    # editing a chat's text drops its now stale predictions
    sqlite_store.add_chats([ChatIn("0", "changed text", {"n": 0}, None)])
    assert _unscored(sqlite_store, 1) == [ids[0]]


def _unscored(store: Store, version: int, size: int = 2, **kw: object) -> list[int]:
    pages = list(store.iter_unscored(version, size, **kw))  # type: ignore[arg-type]
    assert all(0 < len(p) <= size for p in pages)
    ids = [cid for page in pages for cid, _ in page]
    assert store.count_unscored(version, **kw) == len(ids)  # type: ignore[arg-type]
    return ids


def test_unscored_pages_skip_labelled_and_scored_chats_and_split_into_shards(
    sqlite_store: Store,
) -> None:
    ids = _chats(sqlite_store, 11)
    sqlite_store.reserve_tasks(
        3, ids[:2], strategy="random", model_version=None, selection_scores=[None] * 2
    )
    sqlite_store.add_predictions(1, [PredictionIn(ids[5], (0.2, 0.3, 0.5), "positive", 0.6, 0.9)])
    expected = [c for c in ids[2:] if c != ids[5]]
    assert _unscored(sqlite_store, 1, size=3) == expected
    shards = [_unscored(sqlite_store, 1, size=2, shard=(i, 3)) for i in range(3)]
    assert sorted(c for shard in shards for c in shard) == expected
    assert all(c % 3 == i for i, shard in enumerate(shards) for c in shard)
    # a page is re-derived after the previous one: what was scored meanwhile is skipped
    pages = sqlite_store.iter_unscored(1, 3)
    first = next(pages)
    sqlite_store.add_predictions(
        1, [PredictionIn(c, (0.2, 0.3, 0.5), "positive", 0.6, 0.9) for c in expected[3:6]]
    )
    rest = [cid for page in pages for cid, _ in page]
    assert [c for c, _ in first] + rest == expected[:3] + expected[6:]


def test_candidates_are_arrays_of_scored_unsent_chats(sqlite_store: Store) -> None:
    ids = _chats(sqlite_store, 4)
    rows = [
        PredictionIn(c, (0.1 * i, 0.2, 0.8 - 0.1 * i), "positive", 0.6, 0.5)
        for i, c in enumerate(ids)
    ]
    sqlite_store.add_predictions(2, rows)
    sqlite_store.reserve_tasks(
        9, [ids[1]], strategy="random", model_version=None, selection_scores=[None]
    )
    cands = sqlite_store.candidates(2, 9)
    assert cands.chat_ids.tolist() == [ids[0], ids[2], ids[3]]
    assert cands.probs.shape == (3, 3)
    assert cands.probs[1].tolist() == pytest.approx([0.2, 0.2, 0.6])
    assert len(sqlite_store.candidates(3, 9)) == 0


def test_a_chat_is_reserved_for_a_project_only_once(sqlite_store: Store) -> None:
    ids = _chats(sqlite_store, 4)
    kw = {"strategy": "entropy", "model_version": 1}
    assert sqlite_store.reserve_tasks(7, ids[:3], selection_scores=[0.1] * 3, **kw) == 3  # type: ignore[arg-type]
    assert sqlite_store.reserve_tasks(7, ids, selection_scores=[0.1] * 4, **kw) == 1  # type: ignore[arg-type]
    assert len(sqlite_store.pending_tasks(7)) == 4
    sqlite_store.mark_pushed(7, {ids[0]: 500})
    assert [t.chat_id for t in sqlite_store.pending_tasks(7)] == ids[1:]
    assert sqlite_store.task_chat_map(7) == {500: ids[0]}
    assert sqlite_store.unlabelled_chat_ids() == []


def test_annotations_upsert_keeps_history_and_never_double_counts(sqlite_store: Store) -> None:
    ids = _chats(sqlite_store, 3)
    c = sqlite_store.upsert_annotations(
        1, [_ann(11, ids[0], "negative", 0), _ann(12, ids[1], "neutral", 1)]
    )
    assert (c.new, c.updated, c.unchanged) == (2, 0, 0)
    c = sqlite_store.upsert_annotations(
        1, [_ann(11, ids[0], "negative", 0), _ann(12, ids[1], "positive", 5)]
    )
    assert (c.new, c.updated, c.unchanged) == (0, 1, 1)
    history = sqlite_store.annotation_history(12)
    assert [(h.revision, h.label) for h in history] == [(1, "neutral")]
    examples = sqlite_store.training_examples()
    assert [(e.chat_id, e.label) for e in examples] == [(ids[0], "negative"), (ids[1], "positive")]
    assert sqlite_store.counts()["annotations"] == 2


def test_training_examples_skip_cancelled_and_take_the_latest(sqlite_store: Store) -> None:
    """One annotator's answers: the latest is theirs (several annotators: their consensus,
    tests/unit/test_consensus_store.py)."""
    ids = _chats(sqlite_store, 2)
    sqlite_store.upsert_annotations(
        1,
        [
            _ann(1, ids[0], "negative", 0),
            _ann(2, ids[0], "positive", 9),
            _ann(3, ids[1], None, 0, cancelled=True),
        ],
    )
    examples = sqlite_store.training_examples()
    assert [(e.annotation_id, e.label) for e in examples] == [(2, "positive")]


def test_lease_excludes_a_second_holder_until_released(sqlite_store: Store) -> None:
    with sqlite_store.lease("retrain"), pytest.raises(LeaseBusy), sqlite_store.lease("retrain"):
        pass
    with sqlite_store.lease("retrain"):  # released: free again
        pass


def test_expired_lease_or_dead_holder_is_taken_over(sqlite_store: Store) -> None:
    assert sqlite_store.try_acquire("x", "someone", timedelta(seconds=-1))
    assert sqlite_store.try_acquire("x", "me", timedelta(seconds=60))  # expired
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    sqlite_store.release("x", "me")
    assert sqlite_store.try_acquire("y", "ghost", timedelta(hours=1))
    with sqlite_store.session() as s:
        from store.models import Lease

        lease = s.get(Lease, "y")
        assert lease is not None
        lease.pid = pid  # a holder on this host whose process is gone
        s.add(lease)
        s.commit()
    assert pid != os.getpid()
    assert sqlite_store.try_acquire("y", "me", timedelta(hours=1))
    assert not sqlite_store.try_acquire("y", "other", timedelta(hours=1))  # I am alive


def test_versions_and_single_production(sqlite_store: Store) -> None:
    for n in (1, 2):
        sqlite_store.add_version(
            ModelVersion(
                number=n,
                base_model="b",
                checkpoint_path=f"/m/v{n}",
                weights_sha256="0" * 64,
                data_fingerprint=str(n),
            )
        )
    sqlite_store.promote(1, actor="test")
    sqlite_store.promote(2, actor="test")
    statuses = {v.number: v.status for v in sqlite_store.versions()}
    assert statuses == {1: "archived", 2: "production"}
    assert sqlite_store.production() is not None
    assert sqlite_store.next_version_number() == 3
    assert sqlite_store.version_by_fingerprint("2") is not None


def test_step_runs_are_recorded(sqlite_store: Store) -> None:
    run = sqlite_store.start_run("c1", "push", "manual")
    assert not sqlite_store.step_done("c1", "push")
    sqlite_store.finish_run(run, "ok", {"pushed": 3})
    assert sqlite_store.step_done("c1", "push")
    assert sqlite_store.runs(limit=1)[0].counts == {"pushed": 3}


def test_a_selection_round_is_stored_with_its_tasks(sqlite_store: Store) -> None:
    from store import SelectionRound

    ids = _chats(sqlite_store, 5)
    sqlite_store.reserve_tasks(
        4, ids[:1], strategy="random", model_version=None, selection_scores=[None]
    )
    chosen = SelectionRound(
        project_id=4,
        model_version=2,
        strategy="diverse",
        candidates=5,
        requested=3,
        options={"class_balance": True},
        stopping={"fired": False, "pairs": []},
    )
    n = sqlite_store.reserve_tasks(
        4,
        ids[:3],
        strategy="diverse",
        model_version=2,
        selection_scores=[0.5, 0.4, 0.3],
        selection=chosen,
    )
    assert n == 2  # ids[0] was already reserved
    (stored,) = sqlite_store.rounds(4)
    assert (stored.strategy, stored.model_version, stored.chosen, stored.requested) == (
        "diverse",
        2,
        2,
        3,
    )
    assert stored.options == {"class_balance": True}
    tasks = {t.chat_id: t for t in sqlite_store.tasks(4)}
    assert tasks[ids[0]].round_id is None
    assert [tasks[c].round_id for c in ids[1:3]] == [stored.id, stored.id]
    assert [tasks[c].selection_score for c in ids[1:3]] == [0.4, 0.3]
    assert sqlite_store.stop_set(2, stride=2) == [c for c in ids if c % 2 == 0][:2]
