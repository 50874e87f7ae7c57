"""The store's one entry point: every read and write of the loop's durable state.

``Store`` gathers one class per aggregate (chats and predictions, tasks and annotations,
versions and promotions, runs and leases), each in its own module.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from store.annotations import (
    AnnotationCounts,
    AnnotationIn,
    AnnotationStore,
    Answer,
    TrainingExample,
)
from store.base import StoreBase
from store.chats import Candidates, ChatStore, IngestCounts, PredictionIn
from store.consensus import AnswerGroup, ConsensusStore
from store.erasure import ErasureIn, ErasureStore
from store.identities import IdentityStore
from store.models import Annotation, Chat, LabelTask, ModelVersion, Prediction
from store.requests import RequestStore
from store.review import ReviewStore
from store.runs import RunStore
from store.service import ServiceStore, ShadowCounts
from store.tasks import TaskChanges, TaskStore
from store.versions import VersionStore

__all__ = [
    "AnnotationCounts",
    "AnnotationIn",
    "Answer",
    "AnswerGroup",
    "Candidates",
    "ErasureIn",
    "IngestCounts",
    "PredictionIn",
    "ShadowCounts",
    "Store",
    "StoreBase",
    "TaskChanges",
    "TrainingExample",
]


class Store(
    ChatStore,
    TaskStore,
    AnnotationStore,
    ConsensusStore,
    ReviewStore,
    VersionStore,
    RunStore,
    RequestStore,
    ServiceStore,
    IdentityStore,
    ErasureStore,
):
    """Owns the engine. Methods open short sessions; nothing here holds a transaction open."""

    def erased_learned(self, number: int) -> dict[int, int]:
        """Erasure id -> how many of the labels and unlabelled chats this version learned
        (its warm-start chain and teacher included) the erasure removed."""
        return self.erased_in_lineage(self.lineage(number), self.pool_chats(number))

    def counts(self) -> dict[str, int]:
        with self.session() as s:

            def n(q: Any) -> int:
                return int(s.exec(q).one())

            production = self.production()
            return {
                "chats": n(select(func.count()).select_from(Chat)),
                "scored_by_production": n(
                    select(func.count())
                    .select_from(Prediction)
                    .where(Prediction.model_version == (production.number if production else -1))
                ),
                "pushed": n(
                    select(func.count())
                    .select_from(LabelTask)
                    .where(col(LabelTask.state).in_(["pushed", "annotated", "skipped"]))
                ),
                "pending": n(
                    select(func.count()).select_from(LabelTask).where(LabelTask.state == "pending")
                ),
                "labelled_chats": n(
                    select(func.count(func.distinct(Annotation.chat_id))).where(
                        Annotation.cancelled == False  # noqa: E712
                    )
                ),
                "annotations": n(select(func.count()).select_from(Annotation)),
                "versions": n(select(func.count()).select_from(ModelVersion)),
            }
