"""Annotations: what annotators answered, every revision kept, and what training learns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from store.base import WRITE_CHUNK, StoreBase
from store.models import (
    REVIEW,
    Annotation,
    AnnotationHistory,
    Chat,
    ConsensusLabel,
    LabelTask,
    SyncCursor,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotationIn:
    ls_annotation_id: int
    ls_task_id: int
    chat_id: int
    label: str | None
    annotator: str | None
    cancelled: bool
    created_at: datetime
    updated_at: datetime
    lead_time: float | None = None


@dataclass(frozen=True)
class Answer:
    """One annotation that answers (not cancelled, with a label, its task not superseded)."""

    record_id: int
    ls_annotation_id: int
    revision: int
    chat_id: int
    label: str
    annotator: str | None
    text: str
    updated_at: datetime
    pulled_at: datetime
    lead_time: float | None
    review: bool = False  # a reviewer's answer to a review task: it replaces the label

    @property
    def voter(self) -> str:
        """Who answered: the annotator, or this annotation itself when nobody is named."""
        return self.annotator if self.annotator is not None else f"#{self.record_id}"


def signature(answers: Sequence[Answer]) -> list[list[int]]:
    """The exact answers a consensus is reached from: (record id, revision), sorted."""
    return sorted([a.record_id, a.revision] for a in answers)


def review_answer() -> Any:
    """SQL: the annotation answers a review task."""
    return (
        select(LabelTask.id)
        .where(
            LabelTask.strategy == REVIEW,
            LabelTask.ls_instance == Annotation.ls_instance,
            LabelTask.ls_task_id == Annotation.ls_task_id,
        )
        .exists()
    )


def answer_groups(s: Session, chat_ids: Sequence[int] | None = None) -> dict[int, list[Answer]]:
    """Every chat's answers, oldest first (by update, then Label Studio id)."""
    superseded = select(LabelTask.id).where(
        LabelTask.state == "superseded",
        LabelTask.ls_instance == Annotation.ls_instance,
        LabelTask.ls_task_id == Annotation.ls_task_id,
    )
    query = (
        select(Annotation, Chat.text, review_answer())
        .join(Chat, col(Chat.id) == col(Annotation.chat_id))
        .where(
            Annotation.cancelled == False,  # noqa: E712
            col(Annotation.label).is_not(None),
            ~superseded.exists(),
        )
        .order_by(
            col(Annotation.chat_id), col(Annotation.updated_at), col(Annotation.ls_annotation_id)
        )
    )
    if chat_ids is not None:
        query = query.where(col(Annotation.chat_id).in_(chat_ids))
    groups: dict[int, list[Answer]] = {}
    for ann, text, review in s.exec(query).all():
        groups.setdefault(ann.chat_id, []).append(
            Answer(
                ann.id or 0,
                ann.ls_annotation_id,
                ann.revision,
                ann.chat_id,
                ann.label or "",
                ann.annotator,
                text,
                ann.updated_at,
                ann.pulled_at,
                ann.lead_time,
                bool(review),
            )
        )
    return groups


@dataclass(frozen=True)
class AnnotationCounts:
    new: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class TrainingExample:
    annotation_id: int
    chat_id: int
    text: str
    label: str
    pulled_at: datetime  # when this value reached the store (new or changed annotation)
    revision: int = 1  # bumped by every change pulled from Label Studio
    # the store's id of the annotation: unique across Label Studio instances, whose own
    # annotation ids restart after a reset (``annotation_id`` is Label Studio's)
    record_id: int = 0


class AnnotationStore(StoreBase):
    """Annotations, their history, the training set they make, and the pull cursor."""

    def upsert_annotations(
        self, project_id: int, items: Sequence[AnnotationIn], instance: str = ""
    ) -> AnnotationCounts:
        """Insert new annotations; an update keeps the earlier value in the history. Keyed by
        the Label Studio instance and its annotation id, so pulling the same annotation again
        counts nothing. Each touched task becomes ``annotated`` when it has an answer and
        ``skipped`` when every annotation of it was cancelled."""
        new = updated = unchanged = 0
        for start in range(0, len(items), WRITE_CHUNK):
            chunk = items[start : start + WRITE_CHUNK]
            with self.session() as s:
                known = {
                    a.ls_annotation_id: a
                    for a in s.exec(
                        select(Annotation).where(
                            Annotation.ls_instance == instance,
                            col(Annotation.ls_annotation_id).in_(
                                [i.ls_annotation_id for i in chunk]
                            ),
                        )
                    ).all()
                }
                for item in chunk:
                    row = known.get(item.ls_annotation_id)
                    if row is None:
                        row = Annotation(
                            ls_instance=instance,
                            ls_annotation_id=item.ls_annotation_id,
                            ls_task_id=item.ls_task_id,
                            project_id=project_id,
                            chat_id=item.chat_id,
                            label=item.label,
                            annotator=item.annotator,
                            cancelled=item.cancelled,
                            created_at=item.created_at,
                            updated_at=item.updated_at,
                            lead_time=item.lead_time,
                        )
                        s.add(row)
                        known[item.ls_annotation_id] = row
                        new += 1
                    elif (row.label, row.annotator, row.cancelled) != (
                        item.label,
                        item.annotator,
                        item.cancelled,
                    ):
                        s.add(
                            AnnotationHistory(
                                annotation_id=row.id,  # type: ignore[arg-type]
                                revision=row.revision,
                                label=row.label,
                                annotator=row.annotator,
                                cancelled=row.cancelled,
                                updated_at=row.updated_at,
                            )
                        )
                        row.label, row.annotator, row.cancelled = (
                            item.label,
                            item.annotator,
                            item.cancelled,
                        )
                        row.lead_time = item.lead_time
                        row.updated_at, row.revision, row.pulled_at = (
                            item.updated_at,
                            row.revision + 1,
                            utcnow(),
                        )
                        s.add(row)
                        updated += 1
                    else:
                        unchanged += 1
                    s.flush()
                _settle_task_states(s, instance, {i.ls_task_id for i in chunk})
                s.commit()
        return AnnotationCounts(new, updated, unchanged)

    def rename_annotators(self, keep: Callable[[str], bool], rename: Callable[[str], str]) -> int:
        """Rename every annotator name that ``keep`` refuses (e-mails pulled before annotators
        had pseudonymous ids), in annotations and their history; returns the rows changed."""
        changed = 0
        with self.session() as s:
            for model in (Annotation, AnnotationHistory):
                names = s.exec(select(model.annotator).distinct()).all()
                for name in names:
                    if name is None or keep(name):
                        continue
                    result = s.exec(
                        update(model)
                        .where(col(model.annotator) == name)
                        .values(annotator=rename(name))
                    )
                    changed += int(result.rowcount) if model is Annotation else 0
            s.commit()
        return changed

    def annotation_history(self, ls_annotation_id: int) -> list[AnnotationHistory]:
        with self.session() as s:
            return list(
                s.exec(
                    select(AnnotationHistory)
                    .join(Annotation, col(Annotation.id) == col(AnnotationHistory.annotation_id))
                    .where(Annotation.ls_annotation_id == ls_annotation_id)
                    .order_by(col(AnnotationHistory.revision))
                ).all()
            )

    def training_examples(self) -> list[TrainingExample]:
        """One example per labelled chat. A chat a reviewer answered: the latest review. A chat
        one annotator answered: their most recently
        updated answer. A chat several annotators answered: their consensus, once it was
        reached from exactly these answers and accepted (quality.consensus; a stale,
        uncertain or disputed one leaves the chat out until it is settled). Left out too: a
        chat whose task still waits for the annotators it asked, and answers to a task that
        was superseded (the chat's text changed since)."""
        with self.session() as s:
            groups = answer_groups(s)
            waiting = set(
                s.exec(
                    select(LabelTask.chat_id).where(
                        LabelTask.state == "pushed", col(LabelTask.overlap) > 1
                    )
                ).all()
            )
            agreed = {
                c.chat_id: c
                for c in s.exec(
                    select(ConsensusLabel).where(ConsensusLabel.state == "accepted")
                ).all()
            }
        out = []
        for chat_id, group in sorted(groups.items()):
            reviews = [a for a in group if a.review]
            answers = [a for a in group if not a.review]
            if reviews:
                chosen, label = reviews[-1], reviews[-1].label
            elif chat_id in waiting:
                continue
            else:
                chosen, label = answers[-1], answers[-1].label
            if not reviews and len({a.voter for a in answers}) > 1:
                c = agreed.get(chat_id)
                if c is None or c.answers != signature(answers):
                    continue
                label = c.label
                # the newest answer that gave it (the orchestrator accepts no consensus that
                # no annotator gave; should one be stored, the newest answer stands for it)
                chosen = next((a for a in reversed(answers) if a.label == label), answers[-1])
            out.append(
                TrainingExample(
                    chosen.ls_annotation_id,
                    chat_id,
                    chosen.text,
                    label,
                    chosen.pulled_at,
                    chosen.revision,
                    chosen.record_id,
                )
            )
        return out

    def get_cursor(self, name: str) -> datetime | None:
        with self.session() as s:
            row = s.get(SyncCursor, name)
            return row.value if row else None

    def set_cursor(self, name: str, value: datetime) -> None:
        with self.session() as s:
            row = s.get(SyncCursor, name)
            if row is None:
                s.add(SyncCursor(name=name, value=value))
            elif value > row.value:
                row.value = value
                s.add(row)
            s.commit()


def _settle_task_states(s: Session, instance: str, ls_task_ids: set[int]) -> None:
    """Each task's state from its annotations: ``annotated`` once as many annotators
    answered as it asks (``overlap``), or as many tried with one answering at least;
    ``skipped`` when every annotation was cancelled; ``pushed`` while it waits for more.
    Only tasks waiting or answered change (history stays history)."""
    rows = s.exec(
        select(Annotation.ls_task_id, Annotation.cancelled).where(
            Annotation.ls_instance == instance, col(Annotation.ls_task_id).in_(ls_task_ids)
        )
    ).all()
    tries: dict[int, int] = {}
    answers: dict[int, int] = {}
    for task_id, cancelled in rows:
        tries[task_id] = tries.get(task_id, 0) + 1
        answers[task_id] = answers.get(task_id, 0) + (not cancelled)
    tasks = s.exec(
        select(LabelTask).where(
            col(LabelTask.ls_instance) == instance,
            col(LabelTask.ls_task_id).in_(list(tries)),
            col(LabelTask.state).in_(["pushed", "annotated", "skipped"]),
        )
    ).all()
    for task in tasks:
        tried, answered = tries[task.ls_task_id or 0], answers[task.ls_task_id or 0]
        if not answered:
            state = "skipped"
        elif answered >= task.overlap or tried >= task.overlap:
            state = "annotated"
        else:
            state = "pushed"
        if task.state != state:
            task.state, task.state_at = state, utcnow()
            s.add(task)
