"""Chats and predictions: what the pool holds and what each model version thought of it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from store.base import ROW_ERRORS, WRITE_CHUNK, StoreBase, db_reason, is_transient, rowcount
from store.erasure import erased_among
from store.ingest import ChatIn
from store.models import (
    ACTIVE_TASK_STATES,
    Chat,
    LabelTask,
    Prediction,
    utcnow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestCounts:
    inserted: int
    updated: int
    unchanged: int
    repeated: int = 0  # rows whose id came earlier in the same file: the later row won
    refused: tuple[tuple[int, str], ...] = ()  # (row, reason) the database would not store

    def __add__(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.repeated + other.repeated,
            self.refused + other.refused,
        )

    @property
    def stored(self) -> int:
        """Rows now in the store as their file says (every row but the refused)."""
        return self.inserted + self.updated + self.unchanged + self.repeated


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


class ChatStore(StoreBase):
    """Chats and the predictions made on them."""

    def add_chats(self, chats: Sequence[ChatIn], *, since: datetime | None = None) -> IngestCounts:
        """Insert new chats; a known id with a changed text or metadata is updated (and its
        predictions dropped, since they were made on the old text); otherwise unchanged.

        A chat already written at or after ``since`` (this same ingest, earlier in the file)
        counts as ``repeated``: the later row wins. A row the database refuses is reported in
        ``refused`` with its row number and the others are stored; an unreachable or locked
        database raises (a transient error: the caller keeps the file for later)."""
        totals = IngestCounts(0, 0, 0)
        latest: dict[str, ChatIn] = {}
        repeated = 0
        for c in chats:  # within one call the last row of an id wins
            repeated += c.source_id in latest
            latest[c.source_id] = c
        items = list(latest.values())
        for start in range(0, len(items), WRITE_CHUNK):
            chunk = items[start : start + WRITE_CHUNK]
            try:
                counts = self._write_chats(chunk, since)
            except ROW_ERRORS as exc:
                if is_transient(exc):
                    raise self._unavailable(exc) from exc
                counts = self._write_chats_one_by_one(chunk, since)
            totals = totals + counts
        return totals + IngestCounts(0, 0, 0, repeated=repeated)

    def _write_chats_one_by_one(
        self, chats: Sequence[ChatIn], since: datetime | None
    ) -> IngestCounts:
        """Isolate the rows a chunk's transaction failed on: each in its own transaction."""
        totals = IngestCounts(0, 0, 0)
        for chat in chats:
            try:
                totals = totals + self._write_chats([chat], since)
            except ROW_ERRORS as exc:
                if is_transient(exc):
                    raise self._unavailable(exc) from exc
                logger.warning("row %d refused by the database: %s", chat.row, db_reason(exc))
                totals = totals + IngestCounts(0, 0, 0, refused=((chat.row, db_reason(exc)),))
        return totals

    def _write_chats(self, chats: Sequence[ChatIn], since: datetime | None) -> IngestCounts:
        inserted = updated = unchanged = repeated = 0
        with self.session() as s:
            existing = {
                c.source_id: c
                for c in s.exec(
                    select(Chat).where(col(Chat.source_id).in_([c.source_id for c in chats]))
                ).all()
            }
            erased = erased_among(s, [c.source_id for c in chats if c.source_id not in existing])
            refused: list[tuple[int, str]] = []
            now = utcnow()
            for item in chats:
                row = existing.get(item.source_id)
                if row is None and item.source_id in erased:
                    refused.append(
                        (item.row, f"erased on request (erasure #{erased[item.source_id]})")
                    )
                    continue
                if row is None:
                    s.add(
                        Chat(
                            source_id=item.source_id,
                            text=item.text,
                            meta=item.meta,
                            received_at=item.received_at or now,
                            ingested_at=now,
                            updated_at=now,
                        )
                    )
                    inserted += 1
                    continue
                earlier_row = since is not None and row.updated_at >= since
                if row.text != item.text or row.meta != item.meta:
                    if row.text != item.text:
                        # what the model and the annotators said was about the old text: the
                        # predictions go, the tasks become history (their labels leave the
                        # training set, kept in the store) and the chat may be asked again
                        s.exec(delete(Prediction).where(col(Prediction.chat_id) == row.id))
                        s.exec(
                            update(LabelTask)
                            .where(
                                col(LabelTask.chat_id) == row.id,
                                col(LabelTask.state).in_(ACTIVE_TASK_STATES),
                            )
                            .values(state="superseded", state_at=now)
                        )
                    row.text, row.meta, row.updated_at = item.text, item.meta, now
                    if item.received_at:
                        row.received_at = item.received_at
                    s.add(row)
                    updated += not earlier_row
                else:
                    unchanged += not earlier_row
                repeated += earlier_row
            s.commit()
        return IngestCounts(inserted, updated, unchanged, repeated=repeated, refused=tuple(refused))

    # -- predictions --------------------------------------------------------------------------

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
        """Chats with no active task (in any project): the pool the loop selects from."""
        with self.session() as s:
            sent = select(LabelTask.chat_id).where(col(LabelTask.state).in_(ACTIVE_TASK_STATES))
            if project_id is not None:
                sent = sent.where(LabelTask.project_id == project_id)
            query = select(Chat.id).where(col(Chat.id).not_in(sent)).order_by(col(Chat.id))
            rows = s.exec(query).all()
            return [r for r in rows if r is not None]

    def _unscored_query(self, version: int, shard: tuple[int, int] | None) -> Any:
        scored = sa_select(Prediction.chat_id).where(  # type: ignore[call-overload]
            Prediction.chat_id == Chat.id, Prediction.model_version == version
        )
        sent = sa_select(LabelTask.chat_id).where(  # type: ignore[call-overload]
            LabelTask.chat_id == Chat.id, col(LabelTask.state).in_(ACTIVE_TASK_STATES)
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
                written += rowcount(result)
                s.commit()
        return written

    def candidates(self, version: int, project_id: int | None) -> Candidates:
        """Chats scored by ``version`` that were never sent to this project (``None``: to
        any project), for selection and distillation; streamed from the database into
        arrays."""
        parts: list[npt.NDArray[np.float64]] = [np.empty((0, 4))]
        with self.session() as s:
            sent = select(LabelTask.chat_id).where(col(LabelTask.state).in_(ACTIVE_TASK_STATES))
            if project_id is not None:
                sent = sent.where(LabelTask.project_id == project_id)
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
