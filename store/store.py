"""The store's one entry point: every read and write of the loop's durable state."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, delete, func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy import text as sa_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from store.db import make_engine, redact_url
from store.errors import DatabaseUnavailable, LeaseBusy, StoreError
from store.ingest import ChatIn
from store.models import (
    Annotation,
    AnnotationHistory,
    Chat,
    CycleRun,
    LabelTask,
    Lease,
    ModelVersion,
    Prediction,
    Promotion,
    SelectionRound,
    SyncCursor,
    utcnow,
)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Rows per write transaction: short transactions keep SQLite writers from locking each other out.
WRITE_CHUNK = 500
#: Key of the PostgreSQL advisory lock that serialises promotions.
_PROMOTION_LOCK = 0x5E171007


@dataclass(frozen=True)
class IngestCounts:
    inserted: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class PredictionIn:
    chat_id: int
    probs: tuple[float, float, float]  # negative, neutral, positive
    label: str
    score: float
    uncertainty: float


@dataclass(frozen=True)
class Candidates:
    """Selectable chats as arrays: a million of them take 32 MB and no text is loaded."""

    chat_ids: npt.NDArray[np.int64]
    probs: npt.NDArray[np.float64]  # (n, 3): negative, neutral, positive

    def __len__(self) -> int:
        return len(self.chat_ids)


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


class Store:
    """Owns the engine. Methods open short sessions; nothing here holds a transaction open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            if _is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"database unreachable at {self.safe_url} (SENTILOOP_DATABASE_URL): "
                    f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
                ) from exc
            raise

    # -- schema -------------------------------------------------------------------------------

    def init(self) -> None:
        """Create or upgrade the schema to the newest migration (safe to run repeatedly)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            if _is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"database unreachable at {self.safe_url} (SENTILOOP_DATABASE_URL): {exc.orig}"
                ) from exc
            raise

    def check(self) -> None:
        """Fail fast with a clear error when the database is unreachable or not initialised."""
        with self.session() as s:
            try:
                s.exec(select(func.count()).select_from(Chat)).one()
            except OperationalError as exc:
                if _is_connection_error(exc):
                    raise
                raise StoreError(
                    f"the store at {self.safe_url} has no schema yet: run `sentiloop init`"
                ) from exc

    # -- chats --------------------------------------------------------------------------------

    def add_chats(self, chats: Sequence[ChatIn]) -> IngestCounts:
        """Insert new chats; a known id with a changed text or metadata is updated (and its
        predictions dropped, since they were made on the old text); otherwise unchanged."""
        inserted = updated = unchanged = 0
        latest: dict[str, ChatIn] = {c.source_id: c for c in chats}  # last occurrence wins
        ids = list(latest)
        for start in range(0, len(ids), WRITE_CHUNK):
            chunk = ids[start : start + WRITE_CHUNK]
            with self.session() as s:
                existing = {
                    c.source_id: c
                    for c in s.exec(select(Chat).where(col(Chat.source_id).in_(chunk))).all()
                }
                now = utcnow()
                for sid in chunk:
                    item = latest[sid]
                    row = existing.get(sid)
                    if row is None:
                        s.add(
                            Chat(
                                source_id=sid,
                                text=item.text,
                                meta=item.meta,
                                received_at=item.received_at or now,
                                ingested_at=now,
                                updated_at=now,
                            )
                        )
                        inserted += 1
                    elif row.text != item.text or row.meta != item.meta:
                        if row.text != item.text:
                            s.exec(delete(Prediction).where(col(Prediction.chat_id) == row.id))
                        row.text, row.meta, row.updated_at = item.text, item.meta, now
                        if item.received_at:
                            row.received_at = item.received_at
                        s.add(row)
                        updated += 1
                    else:
                        unchanged += 1
                s.commit()
        return IngestCounts(inserted, updated, unchanged)

    def chats_by_id(self, chat_ids: Sequence[int]) -> dict[int, Chat]:
        result: dict[int, Chat] = {}
        for start in range(0, len(chat_ids), WRITE_CHUNK):
            with self.session() as s:
                rows = s.exec(
                    select(Chat).where(col(Chat.id).in_(chat_ids[start : start + WRITE_CHUNK]))
                ).all()
                result.update({r.id: r for r in rows if r.id is not None})
        return result

    def chat_ids_by_source(self, source_ids: Sequence[str]) -> dict[str, int]:
        result: dict[str, int] = {}
        for start in range(0, len(source_ids), WRITE_CHUNK):
            with self.session() as s:
                rows = s.exec(
                    select(Chat.source_id, Chat.id).where(
                        col(Chat.source_id).in_(source_ids[start : start + WRITE_CHUNK])
                    )
                ).all()
                result.update({sid: cid for sid, cid in rows if cid is not None})
        return result

    def unlabelled_chat_ids(self, project_id: int | None = None) -> list[int]:
        """Chats never sent to annotators (in any project): the pool the loop selects from."""
        with self.session() as s:
            sent = select(LabelTask.chat_id)
            if project_id is not None:
                sent = sent.where(LabelTask.project_id == project_id)
            query = select(Chat.id).where(col(Chat.id).not_in(sent)).order_by(col(Chat.id))
            rows = s.exec(query).all()
            return [r for r in rows if r is not None]

    # -- predictions --------------------------------------------------------------------------

    def _unscored_query(self, version: int, shard: tuple[int, int] | None) -> Any:
        scored = sa_select(Prediction.chat_id).where(  # type: ignore[call-overload]
            Prediction.chat_id == Chat.id, Prediction.model_version == version
        )
        sent = sa_select(LabelTask.chat_id).where(  # type: ignore[call-overload]
            LabelTask.chat_id == Chat.id
        )
        query = sa_select(col(Chat.id), col(Chat.text)).where(~scored.exists(), ~sent.exists())
        if shard is not None:
            index, count = shard
            query = query.where(col(Chat.id) % count == index)
        return query

    def count_unscored(self, version: int, shard: tuple[int, int] | None = None) -> int:
        inner = self._unscored_query(version, shard).subquery()
        with self.session() as s:
            return int(s.execute(sa_select(func.count()).select_from(inner)).scalar_one())

    def iter_unscored(
        self, version: int, size: int, shard: tuple[int, int] | None = None
    ) -> Iterator[list[tuple[int, str]]]:
        """Unlabelled chats without a prediction of ``version``, ``size`` at a time as
        (id, text), in id order. Each page is its own short read (keyset pagination), so
        memory stays flat however large the pool is, and a page is re-derived after the
        previous one was written: a crashed run resumes where it stopped.
        ``shard=(index, count)`` keeps the chats whose id is ``index`` modulo ``count``."""
        last = 0
        base = self._unscored_query(version, shard)
        while True:
            query = base.where(col(Chat.id) > last).order_by(col(Chat.id)).limit(size)
            with self.session() as s:
                rows = [(int(r[0]), str(r[1])) for r in s.execute(query).all()]
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def stop_set(self, size: int, stride: int = 5) -> list[int]:
        """A fixed sample of chats for the stopping criterion: every ``stride``-th id from
        the oldest on. Ids are never reused, so once the pool holds ``size * stride``
        chats the set never changes, whatever is ingested or labelled later."""
        with self.session() as s:
            rows = s.exec(
                select(Chat.id).where(col(Chat.id) % stride == 0).order_by(col(Chat.id)).limit(size)
            ).all()
        return [r for r in rows if r is not None]

    def add_predictions(self, version: int, predictions: Sequence[PredictionIn]) -> int:
        """Insert predictions in short transactions; a (chat, version) already there is kept."""
        written = 0
        for start in range(0, len(predictions), WRITE_CHUNK):
            rows = [
                {
                    "chat_id": p.chat_id,
                    "model_version": version,
                    "p_negative": p.probs[0],
                    "p_neutral": p.probs[1],
                    "p_positive": p.probs[2],
                    "label": p.label,
                    "score": p.score,
                    "uncertainty": p.uncertainty,
                    "created_at": utcnow(),
                }
                for p in predictions[start : start + WRITE_CHUNK]
            ]
            with self.session() as s:
                result = s.execute(
                    self._insert_ignore(Prediction, ["chat_id", "model_version"]), rows
                )
                written += _rowcount(result)
                s.commit()
        return written

    def candidates(self, version: int, project_id: int) -> Candidates:
        """Chats scored by ``version`` that were never sent to this project, for selection;
        streamed from the database into arrays."""
        parts: list[npt.NDArray[np.float64]] = [np.empty((0, 4))]
        with self.session() as s:
            sent = select(LabelTask.chat_id).where(LabelTask.project_id == project_id)
            rows = s.execute(
                sa_select(
                    col(Prediction.chat_id),
                    col(Prediction.p_negative),
                    col(Prediction.p_neutral),
                    col(Prediction.p_positive),
                )
                .where(
                    col(Prediction.model_version) == version, col(Prediction.chat_id).not_in(sent)
                )
                .order_by(col(Prediction.chat_id))
                .execution_options(yield_per=10_000)
            )
            for part in rows.partitions():
                parts.append(np.asarray([tuple(r) for r in part], dtype=np.float64))
        table = np.concatenate(parts)
        return Candidates(table[:, 0].astype(np.int64), np.ascontiguousarray(table[:, 1:]))

    def prediction_for(self, chat_ids: Sequence[int], version: int) -> dict[int, Prediction]:
        with self.session() as s:
            rows = s.exec(
                select(Prediction).where(
                    Prediction.model_version == version, col(Prediction.chat_id).in_(chat_ids)
                )
            ).all()
        return {r.chat_id: r for r in rows}

    # -- label tasks --------------------------------------------------------------------------

    def reserve_tasks(
        self,
        project_id: int,
        chat_ids: Sequence[int],
        *,
        strategy: str,
        model_version: int | None,
        selection_scores: Sequence[float | None],
        selection: SelectionRound | None = None,
    ) -> int:
        """Record chats as ``pending`` for a project before they are imported, so that a chat
        can never be chosen twice; a chat that already has a row is left alone.
        ``selection``, when given, is stored in the same transaction and the tasks point
        to it: which round chose them is never lost or half-written."""
        now = utcnow()
        rows = [
            {
                "chat_id": cid,
                "project_id": project_id,
                "state": "pending",
                "strategy": strategy,
                "model_version": model_version,
                "selection_score": score,
                "selected_at": now,
            }
            for cid, score in zip(chat_ids, selection_scores, strict=True)
        ]
        with self.session() as s:
            if selection is not None:
                s.add(selection)
                s.flush()
                for row in rows:
                    row["round_id"] = selection.id
            written = 0
            if rows:
                result = s.execute(self._insert_ignore(LabelTask, ["chat_id", "project_id"]), rows)
                written = _rowcount(result)
            if selection is not None:
                selection.chosen = written
            s.commit()
            return written

    def rounds(self, project_id: int | None = None, limit: int = 20) -> list[SelectionRound]:
        """Selection rounds, newest first."""
        with self.session() as s:
            q = select(SelectionRound)
            if project_id is not None:
                q = q.where(SelectionRound.project_id == project_id)
            return list(s.exec(q.order_by(col(SelectionRound.id).desc()).limit(limit)).all())

    def pending_tasks(self, project_id: int) -> list[LabelTask]:
        with self.session() as s:
            return list(
                s.exec(
                    select(LabelTask)
                    .where(LabelTask.project_id == project_id, LabelTask.state == "pending")
                    .order_by(col(LabelTask.id))
                ).all()
            )

    def mark_pushed(self, project_id: int, task_ids: dict[int, int]) -> None:
        """Record Label Studio task ids (chat id -> task id) for pending rows."""
        now = utcnow()
        items = list(task_ids.items())
        for start in range(0, len(items), WRITE_CHUNK):
            with self.session() as s:
                for chat_id, ls_task_id in items[start : start + WRITE_CHUNK]:
                    s.exec(
                        update(LabelTask)
                        .where(
                            col(LabelTask.project_id) == project_id,
                            col(LabelTask.chat_id) == chat_id,
                        )
                        .values(ls_task_id=ls_task_id, state="pushed", pushed_at=now)
                    )
                s.commit()

    def task_chat_map(self, project_id: int) -> dict[int, int]:
        """Label Studio task id -> chat id for this project."""
        with self.session() as s:
            rows = s.exec(
                select(LabelTask.ls_task_id, LabelTask.chat_id).where(
                    LabelTask.project_id == project_id, col(LabelTask.ls_task_id).is_not(None)
                )
            ).all()
        return {t: c for t, c in rows if t is not None}

    def tasks(self, project_id: int, states: Sequence[str] | None = None) -> list[LabelTask]:
        with self.session() as s:
            q = select(LabelTask).where(LabelTask.project_id == project_id)
            if states:
                q = q.where(col(LabelTask.state).in_(states))
            return list(s.exec(q.order_by(col(LabelTask.id))).all())

    # -- annotations --------------------------------------------------------------------------

    def upsert_annotations(
        self, project_id: int, items: Sequence[AnnotationIn]
    ) -> AnnotationCounts:
        """Insert new annotations; an update keeps the earlier value in the history. Keyed by
        Label Studio's annotation id, so pulling the same annotation again counts nothing."""
        new = updated = unchanged = 0
        for start in range(0, len(items), WRITE_CHUNK):
            chunk = items[start : start + WRITE_CHUNK]
            with self.session() as s:
                known = {
                    a.ls_annotation_id: a
                    for a in s.exec(
                        select(Annotation).where(
                            col(Annotation.ls_annotation_id).in_(
                                [i.ls_annotation_id for i in chunk]
                            )
                        )
                    ).all()
                }
                for item in chunk:
                    row = known.get(item.ls_annotation_id)
                    if row is None:
                        row = Annotation(
                            ls_annotation_id=item.ls_annotation_id,
                            ls_task_id=item.ls_task_id,
                            project_id=project_id,
                            chat_id=item.chat_id,
                            label=item.label,
                            annotator=item.annotator,
                            cancelled=item.cancelled,
                            created_at=item.created_at,
                            updated_at=item.updated_at,
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
                s.exec(
                    update(LabelTask)
                    .where(
                        col(LabelTask.project_id) == project_id,
                        col(LabelTask.chat_id).in_([i.chat_id for i in chunk if not i.cancelled]),
                    )
                    .values(state="annotated")
                )
                s.commit()
        return AnnotationCounts(new, updated, unchanged)

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
        """One example per labelled chat: its most recently updated, not cancelled annotation."""
        with self.session() as s:
            rows = s.exec(
                select(Annotation, Chat.text)
                .join(Chat, col(Chat.id) == col(Annotation.chat_id))
                .where(Annotation.cancelled == False, col(Annotation.label).is_not(None))  # noqa: E712
                .order_by(
                    col(Annotation.chat_id),
                    col(Annotation.updated_at),
                    col(Annotation.ls_annotation_id),
                )
            ).all()
        latest: dict[int, TrainingExample] = {}
        for ann, text in rows:
            latest[ann.chat_id] = TrainingExample(
                ann.ls_annotation_id, ann.chat_id, text, ann.label or "", ann.pulled_at
            )
        return [latest[c] for c in sorted(latest)]

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

    # -- model versions -----------------------------------------------------------------------

    def version_by_fingerprint(self, fingerprint: str) -> ModelVersion | None:
        with self.session() as s:
            return s.exec(
                select(ModelVersion).where(ModelVersion.data_fingerprint == fingerprint)
            ).first()

    def next_version_number(self) -> int:
        with self.session() as s:
            current = s.exec(select(func.max(ModelVersion.number))).one()
            return int(current or 0) + 1

    def add_version(self, version: ModelVersion) -> ModelVersion:
        with self.session() as s:
            s.add(version)
            s.commit()
            s.refresh(version)
            return version

    def versions(self) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.exec(select(ModelVersion).order_by(col(ModelVersion.number))).all())

    def version(self, number: int) -> ModelVersion | None:
        with self.session() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.number == number)).first()

    def production(self) -> ModelVersion | None:
        with self.session() as s:
            return s.exec(
                select(ModelVersion)
                .where(ModelVersion.status == "production")
                .order_by(col(ModelVersion.number).desc())
            ).first()

    def set_gate(self, number: int, gate: dict[str, Any]) -> None:
        with self.session() as s:
            s.exec(update(ModelVersion).where(col(ModelVersion.number) == number).values(gate=gate))
            s.commit()

    def set_metrics(self, number: int, metrics: dict[str, Any]) -> None:
        with self.session() as s:
            s.exec(
                update(ModelVersion)
                .where(col(ModelVersion.number) == number)
                .values(metrics=metrics)
            )
            s.commit()

    def promote(
        self,
        number: int,
        *,
        actor: str,
        reason: str = "",
        action: str = "promote",
        gate: dict[str, Any] | None = None,
        forced: bool = False,
    ) -> Promotion:
        """Make ``number`` the one production version and record who did it and why, in one
        transaction. The partial unique index refuses a second production row, so of two
        concurrent promotions one wins and the other retries against the new state."""
        for attempt in range(10):
            try:
                return self._promote_once(number, actor, reason, action, gate or {}, forced)
            except (IntegrityError, OperationalError) as exc:
                # a lost race (unique index) or a busy/locked database: try again afresh
                if attempt == 9 or (
                    isinstance(exc, OperationalError) and _is_connection_error(exc)
                ):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise StoreError("unreachable")  # pragma: no cover

    def _promote_once(
        self,
        number: int,
        actor: str,
        reason: str,
        action: str,
        gate: dict[str, Any],
        forced: bool,
    ) -> Promotion:
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":
                # promotions queue up behind one lock instead of deadlocking on row locks
                s.execute(sa_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PROMOTION_LOCK})
            target = s.exec(select(ModelVersion).where(ModelVersion.number == number)).first()
            if target is None:
                raise StoreError(f"no model version {number}")
            if target.checkpoint_deleted:
                raise StoreError(f"v{number}'s checkpoint was deleted by retention")
            current = s.exec(
                select(ModelVersion).where(ModelVersion.status == "production")
            ).first()
            previous = current.number if current else None
            if current is not None and current.number != number:
                current.status = "archived"
                s.add(current)
                s.flush()  # the old row leaves 'production' before the new one enters it
            target.status, target.promoted_at = "production", utcnow()
            s.add(target)
            record = Promotion(
                version=number,
                previous=previous,
                action=action,
                actor=actor,
                reason=reason,
                forced=forced,
                gate=gate,
            )
            s.add(record)
            s.commit()
            s.refresh(record)
            return record

    def promotions(self, limit: int = 50) -> list[Promotion]:
        with self.session() as s:
            return list(
                s.exec(select(Promotion).order_by(col(Promotion.id).desc()).limit(limit)).all()
            )

    def rollback_target(self) -> int | None:
        """The version that was production before the current one was promoted."""
        production = self.production()
        if production is None:
            return None
        with self.session() as s:
            last = s.exec(
                select(Promotion)
                .where(Promotion.version == production.number)
                .order_by(col(Promotion.id).desc())
            ).first()
        return last.previous if last else None

    def lineage(self, number: int) -> list[int]:
        """Annotation ids a version learned from: its own training set, plus its parent's
        lineage when it was warm-started (incremental)."""
        ids: set[int] = set()
        seen: set[int] = set()
        current: int | None = number
        while current is not None and current not in seen:
            seen.add(current)
            version = self.version(current)
            if version is None:
                break
            ids.update(version.annotation_ids)
            current = version.parent if version.mode == "incremental" else None
        return sorted(ids)

    def mark_checkpoint_deleted(self, number: int) -> None:
        with self.session() as s:
            s.exec(
                update(ModelVersion)
                .where(col(ModelVersion.number) == number)
                .values(checkpoint_deleted=True)
            )
            s.commit()

    # -- cycle runs ---------------------------------------------------------------------------

    def start_run(self, cycle_id: str, step: str, trigger: str) -> int:
        with self.session() as s:
            run = CycleRun(cycle_id=cycle_id, step=step, trigger=trigger)
            s.add(run)
            s.commit()
            s.refresh(run)
            return run.id or 0

    def finish_run(
        self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None
    ) -> None:
        with self.session() as s:
            run = s.get(CycleRun, run_id)
            if run is None:
                return
            run.status, run.counts, run.error, run.finished_at = status, counts, error, utcnow()
            s.add(run)
            s.commit()

    def step_done(self, cycle_id: str, step: str) -> bool:
        """Whether this cycle already finished this step: a re-delivered message is a no-op."""
        with self.session() as s:
            return (
                s.exec(
                    select(CycleRun.id).where(
                        CycleRun.cycle_id == cycle_id,
                        CycleRun.step == step,
                        CycleRun.status == "ok",
                    )
                ).first()
                is not None
            )

    def runs(self, limit: int = 20, cycle_id: str | None = None) -> list[CycleRun]:
        with self.session() as s:
            q = select(CycleRun)
            if cycle_id:
                q = q.where(CycleRun.cycle_id == cycle_id)
            return list(s.exec(q.order_by(col(CycleRun.id).desc()).limit(limit)).all())

    # -- status -------------------------------------------------------------------------------

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
                    select(func.count()).select_from(LabelTask).where(LabelTask.state != "pending")
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

    # -- leases -------------------------------------------------------------------------------

    def try_acquire(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take the named lease if free, expired, ours, or held by a dead process on this host."""
        host, pid = socket.gethostname(), os.getpid()
        now = utcnow()
        with self.session() as s:
            try:
                s.add(Lease(name=name, owner=owner, host=host, pid=pid, expires_at=now + ttl))
                s.commit()
                return True
            except IntegrityError:
                s.rollback()
            current = s.get(Lease, name)
            if current is None:
                return False
            stale = current.expires_at < now or current.owner == owner
            if not stale and current.host == host and not _pid_alive(current.pid):
                logger.warning("lease %s: holder pid %s is gone, taking over", name, current.pid)
                stale = True
            if not stale:
                return False
            result = s.exec(
                update(Lease)
                .where(col(Lease.name) == name, col(Lease.owner) == current.owner)
                .values(owner=owner, host=host, pid=pid, acquired_at=now, expires_at=now + ttl)
            )
            s.commit()
            return bool(result.rowcount == 1)

    def renew(self, name: str, owner: str, ttl: timedelta) -> bool:
        with self.session() as s:
            result = s.exec(
                update(Lease)
                .where(col(Lease.name) == name, col(Lease.owner) == owner)
                .values(expires_at=utcnow() + ttl)
            )
            s.commit()
            return bool(result.rowcount == 1)

    def release(self, name: str, owner: str) -> None:
        with self.session() as s:
            s.exec(delete(Lease).where(col(Lease.name) == name, col(Lease.owner) == owner))
            s.commit()

    @contextmanager
    def lease(self, name: str, ttl: timedelta = timedelta(seconds=60)) -> Iterator[str]:
        """Hold ``name`` for the block, renewing it in the background so long steps keep it.
        Raise LeaseBusy at once if another live worker holds it."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not self.try_acquire(name, owner, ttl):
            raise LeaseBusy(f"step {name!r} is already running elsewhere")
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(ttl.total_seconds() / 4):
                try:
                    if not self.renew(name, owner, ttl):
                        logger.error("lease %s was lost", name)
                        return
                except Exception:  # a transient DB error must not kill the step
                    logger.exception("lease %s: renewal failed", name)

        thread = threading.Thread(target=heartbeat, name=f"lease-{name}", daemon=True)
        thread.start()
        try:
            yield owner
        finally:
            stop.set()
            thread.join()
            self.release(name, owner)

    # -- helpers ------------------------------------------------------------------------------

    def _insert_ignore(self, model: type[Any], keys: list[str]) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING RETURNING the key of each row written: with
        many rows, RETURNING is the count every driver gets right (psycopg's rowcount is not)."""
        table = model.__table__
        pk = next(iter(table.primary_key.columns))
        stmt: Any
        if self.engine.dialect.name == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
        elif self.engine.dialect.name == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
        else:
            return insert(table).prefix_with("IGNORE")
        return stmt.returning(pk)


def _rowcount(result: Any) -> int:
    """Rows an insert-or-ignore actually wrote (a CursorResult; typed loosely by SQLAlchemy)."""
    if result.returns_rows:
        return len(result.all())
    return max(int(result.rowcount or 0), 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_connection_error(exc: OperationalError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "unable to open",
            "connection failed",
            "timeout expired",
            "name or service not known",
            "no such host",
        )
    )
