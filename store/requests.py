"""Requests for work (a pull, a retrain) recorded in the store, so that a burst of events
makes one run and a lost message is noticed: the queue only rings the bell."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from store.base import StoreBase
from store.models import CycleRun, LoopState, utcnow

_PREFIX = "wanted:"


class RequestStore(StoreBase):
    """When work was last asked for, and when a run of that step last started."""

    def request(self, name: str, **info: object) -> datetime:
        """Record that ``name`` is wanted now; repeated requests only move the time."""
        at = utcnow()
        value = {"at": at.isoformat(), **info}
        for _ in range(2):  # two first requests at once: one inserts, the other updates
            with self.session() as s:
                row = s.get(LoopState, _PREFIX + name)
                if row is None:
                    s.add(LoopState(name=_PREFIX + name, value=value, updated_at=at))
                else:
                    row.value, row.updated_at = value, at
                    s.add(row)
                try:
                    s.commit()
                    return at
                except IntegrityError:
                    s.rollback()
        return at

    def withdraw(self, name: str) -> None:
        """The request was answered without a run (its work was done meanwhile)."""
        with self.session() as s:
            row = s.get(LoopState, _PREFIX + name)
            if row is not None:
                s.delete(row)
                s.commit()

    def requested_at(self, name: str) -> datetime | None:
        with self.session() as s:
            row = s.get(LoopState, _PREFIX + name)
            return row.updated_at if row is not None else None

    def last_started(
        self, step: str, statuses: Sequence[str] = ("running", "ok", "skipped", "failed")
    ) -> datetime | None:
        """When the newest run of ``step`` in one of ``statuses`` started."""
        with self.session() as s:
            return s.exec(
                select(CycleRun.started_at)
                .where(CycleRun.step == step, col(CycleRun.status).in_(list(statuses)))
                .order_by(col(CycleRun.started_at).desc())
                .limit(1)
            ).first()
