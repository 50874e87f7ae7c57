"""Erasure on request: a customer's chats leave the store with everything made from them
(predictions, tasks, annotations and their history) in one transaction, and an audit row says
who erased how much, when and why, never what."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, col, select

from store.base import WRITE_CHUNK, StoreBase
from store.models import (
    Annotation,
    AnnotationHistory,
    Chat,
    ConsensusLabel,
    ErasedSource,
    Erasure,
    LabelTask,
    Prediction,
)

__all__ = ["ErasureIn", "ErasureStore", "erased_among", "source_hash"]


def source_hash(source_id: str) -> str:
    """What the store keeps of an erased chat's id: enough to refuse it again, nothing more."""
    return hashlib.sha256(source_id.encode("utf-8", "surrogatepass")).hexdigest()


def erased_among(s: Session, source_ids: Sequence[str]) -> dict[str, int]:
    """Of these source ids, those erased on request, with the erasure that removed each."""
    by_hash = {source_hash(x): x for x in source_ids}
    hashes = list(by_hash)
    found: dict[str, int] = {}
    for start in range(0, len(hashes), WRITE_CHUNK):
        rows = s.exec(
            select(ErasedSource.source_hash, ErasedSource.erasure_id).where(
                col(ErasedSource.source_hash).in_(hashes[start : start + WRITE_CHUNK])
            )
        ).all()
        found.update({by_hash[h]: e for h, e in rows})
    return found


@dataclass(frozen=True)
class ErasureIn:
    """Who erases, why, how the chats were chosen and how many Label Studio tasks went."""

    actor: str
    operator_id: int | None
    reason: str
    selector: str  # chat | customer
    label_studio_tasks: int = 0


class ErasureStore(StoreBase):
    """Finding a customer's chats, erasing them, and the erasures so far."""

    def chat_ids_of_customer(self, field: str, key: str) -> list[int]:
        """Chats whose metadata column ``field`` holds ``key`` (JSON lookup on both backends)."""
        with self.session() as s:
            rows = s.exec(
                select(Chat.id)
                .where(col(Chat.meta)[field].as_string() == key)
                .order_by(col(Chat.id))
            ).all()
            return [int(r) for r in rows if r is not None]

    def erasable_tasks(self, chat_ids: Sequence[int]) -> list[LabelTask]:
        """Every task ever made for these chats, in whatever state."""
        with self.session() as s:
            return list(s.exec(select(LabelTask).where(col(LabelTask.chat_id).in_(chat_ids))).all())

    def erase_chats(self, chat_ids: Sequence[int], how: ErasureIn) -> Erasure:
        """Delete the chats and all rows made from them, and record the erasure, atomically."""
        ids = sorted(set(chat_ids))
        with self.session() as s:
            sources = list(s.exec(select(Chat.source_id).where(col(Chat.id).in_(ids))).all())
            annotation_ids = sorted(
                int(a)
                for a in s.exec(select(Annotation.id).where(col(Annotation.chat_id).in_(ids)))
                if a is not None
            )
            erasure = Erasure(
                actor=how.actor,
                operator_id=how.operator_id,
                reason=how.reason,
                selector=how.selector,
                chats=len(sources),
                annotations=len(annotation_ids),
                label_studio_tasks=how.label_studio_tasks,
                annotation_ids=annotation_ids,
                chat_ids=ids,
            )
            s.add(erasure)
            s.flush()
            assert erasure.id is not None
            erasure.predictions = _delete_rows(s, ids, annotation_ids)
            known = erased_among(s, sources)  # none, as ingest refuses them: but never twice
            for source in set(sources) - set(known):
                s.add(ErasedSource(source_hash=source_hash(source), erasure_id=erasure.id))
            s.add(erasure)
            s.commit()
            s.refresh(erasure)
            return erasure

    def erasures(self) -> list[Erasure]:
        with self.session() as s:
            return list(s.exec(select(Erasure).order_by(col(Erasure.id))).all())

    def erased_in_lineage(
        self, lineage: Sequence[int], pool_chats: Sequence[int] = ()
    ) -> dict[int, int]:
        """Erasure id -> how many of these annotation ids (a version's lineage) and of these
        unlabelled chats (a distilled version's pool) it removed."""
        learned, pool = set(lineage), set(pool_chats)
        return {
            e.id: hit
            for e in self.erasures()
            if e.id is not None
            and (
                hit := len(learned.intersection(e.annotation_ids))
                + len(pool.intersection(e.chat_ids))
            )
        }


def _delete_rows(s: Session, chat_ids: list[int], annotation_ids: list[int]) -> int:
    """Children before parents; returns the number of predictions deleted."""
    predictions = 0
    for start in range(0, len(annotation_ids), WRITE_CHUNK):
        part = annotation_ids[start : start + WRITE_CHUNK]
        s.exec(delete(AnnotationHistory).where(col(AnnotationHistory.annotation_id).in_(part)))
        s.exec(delete(Annotation).where(col(Annotation.id).in_(part)))
    for start in range(0, len(chat_ids), WRITE_CHUNK):
        part = chat_ids[start : start + WRITE_CHUNK]
        result = s.exec(delete(Prediction).where(col(Prediction.chat_id).in_(part)))
        predictions += int(result.rowcount)
        s.exec(delete(LabelTask).where(col(LabelTask.chat_id).in_(part)))
        s.exec(delete(ConsensusLabel).where(col(ConsensusLabel.chat_id).in_(part)))
        s.exec(delete(Chat).where(col(Chat.id).in_(part)))
    return predictions
