"""The store's side of consensus (issue #16): a chat several annotators answered trains only
on an accepted consensus reached from exactly its current answers; a task that asks several
annotators waits for them; re-asking puts a task back to waiting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from store import AnnotationIn, ChatIn, ConsensusLabel, Store

pytestmark = pytest.mark.unit


def _chat(store: Store) -> int:
    store.add_chats([ChatIn("c1", "the flight was late", {}, None)])
    return store.chat_ids_by_source(["c1"])["c1"]


def _answer(ls_id: int, chat_id: int, label: str | None, who: str, minute: int) -> AnnotationIn:
    t = datetime(2026, 1, 1, 12, minute, tzinfo=UTC)
    return AnnotationIn(ls_id, 77, chat_id, label, who, label is None, t, t, lead_time=3.0)


def _pushed(store: Store, chat_id: int, overlap: int) -> int:
    store.reserve_tasks(
        1, [chat_id], strategy="entropy", model_version=None, selection_scores=[0.5],
        overlaps={chat_id: overlap},
    )  # fmt: skip
    store.mark_pushed(1, {chat_id: 77})
    (task,) = store.tasks_of_chat(chat_id)
    return task.id or 0


def _verdict(store: Store, chat_id: int, label: str, state: str = "accepted") -> None:
    (group,) = store.answer_groups()
    answers = sorted([a.record_id, a.revision] for a in group.answers)
    store.save_consensus(
        [ConsensusLabel(chat_id=chat_id, label=label, quality=0.9, agreement=0.5, votes=2,
                        method="majority", answers=answers, state=state)]
    )  # fmt: skip


def test_a_task_asking_two_waits_for_the_second_answer(sqlite_store: Store) -> None:
    chat = _chat(sqlite_store)
    _pushed(sqlite_store, chat, overlap=2)
    sqlite_store.upsert_annotations(1, [_answer(1, chat, "negative", "a", 0)])
    assert sqlite_store.tasks_of_chat(chat)[0].state == "pushed"
    assert sqlite_store.training_examples() == []  # one of two answers: not yet
    sqlite_store.upsert_annotations(1, [_answer(2, chat, "neutral", "b", 1)])
    assert sqlite_store.tasks_of_chat(chat)[0].state == "annotated"
    assert sqlite_store.training_examples() == []  # two annotators: no consensus yet
    (group,) = sqlite_store.answer_groups()
    assert (group.chat_id, group.voters, group.task.overlap) == (chat, 2, 2)  # type: ignore[union-attr]
    assert [a.lead_time for a in group.answers] == [3.0, 3.0]


def test_an_accepted_consensus_of_the_current_answers_is_the_label(sqlite_store: Store) -> None:
    chat = _chat(sqlite_store)
    _pushed(sqlite_store, chat, overlap=2)
    sqlite_store.upsert_annotations(
        1, [_answer(1, chat, "negative", "a", 0), _answer(2, chat, "neutral", "b", 1)]
    )
    _verdict(sqlite_store, chat, "negative")
    (example,) = sqlite_store.training_examples()
    assert (example.label, example.annotation_id) == ("negative", 1)  # the answer that agrees
    # a changed answer makes the verdict stale: left out until it is reached again
    sqlite_store.upsert_annotations(1, [_answer(2, chat, "positive", "b", 2)])
    assert sqlite_store.training_examples() == []
    _verdict(sqlite_store, chat, "positive", state="reask")
    assert sqlite_store.training_examples() == []  # too uncertain: not trained on
    assert sqlite_store.consensus_labels()[chat].state == "reask"


def test_another_answer_is_asked_for_and_waited_for(sqlite_store: Store) -> None:
    chat = _chat(sqlite_store)
    task = _pushed(sqlite_store, chat, overlap=2)
    sqlite_store.upsert_annotations(
        1, [_answer(1, chat, "negative", "a", 0), _answer(2, chat, "neutral", "b", 1)]
    )
    _verdict(sqlite_store, chat, "negative")
    sqlite_store.ask_more(task, 3)
    (row,) = sqlite_store.tasks_of_chat(chat)
    assert (row.state, row.overlap) == ("pushed", 3)
    assert sqlite_store.training_examples() == []  # waits for the third
    sqlite_store.upsert_annotations(1, [_answer(3, chat, "negative", "c", 2)])
    assert sqlite_store.tasks_of_chat(chat)[0].state == "annotated"


def test_consensus_rows_of_chats_no_longer_in_question_go(sqlite_store: Store) -> None:
    chat = _chat(sqlite_store)
    sqlite_store.upsert_annotations(
        1, [_answer(1, chat, "negative", "a", 0), _answer(2, chat, "neutral", "b", 1)]
    )
    _verdict(sqlite_store, chat, "negative")
    assert sqlite_store.save_consensus([]) == 1
    assert sqlite_store.consensus_labels() == {}


def test_a_consensus_no_annotator_gave_never_crashes_the_training_set(sqlite_store: Store) -> None:
    chat = _chat(sqlite_store)
    sqlite_store.upsert_annotations(
        1, [_answer(1, chat, "negative", "a", 0), _answer(2, chat, "neutral", "b", 1)]
    )
    _verdict(sqlite_store, chat, "positive")  # as CROWDLAB may, siding with the model
    (example,) = sqlite_store.training_examples()
    assert (example.label, example.annotation_id) == ("positive", 2)
