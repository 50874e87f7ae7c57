"""Label-error review (issue #16): which version's labels were last checked, which chats were
ever sent for review, what a chat's model thought of it before anyone labelled it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlmodel import col, select

from store.base import StoreBase
from store.models import REVIEW, LabelTask, LoopState, Prediction, utcnow

__all__ = ["ReviewStore"]

#: The LoopState row holding the newest version whose labels were checked for errors.
REVIEWED = "label_review"


class ReviewStore(StoreBase):
    """Review bookkeeping; the review tasks themselves are LabelTask rows (strategy REVIEW)."""

    def reviewed_through(self) -> int:
        """The newest version after which labels were checked (0: none yet)."""
        with self.session() as s:
            row = s.get(LoopState, REVIEWED)
            return int(row.value.get("version", 0)) if row is not None else 0

    def mark_reviewed(self, version: int) -> None:
        with self.session() as s:
            row = s.get(LoopState, REVIEWED)
            if row is None:
                s.add(LoopState(name=REVIEWED, value={"version": version}))
            elif int(row.value.get("version", 0)) < version:
                row.value, row.updated_at = {"version": version}, utcnow()
                s.add(row)
            s.commit()

    def reviewed_chats(self) -> set[int]:
        """Chats that were ever sent for review (each chat is reviewed once)."""
        with self.session() as s:
            rows = s.exec(select(LabelTask.chat_id).where(LabelTask.strategy == REVIEW)).all()
        return set(rows)

    def review_counts(self) -> dict[str, int]:
        """Review tasks by state (pushed: waiting for a reviewer; annotated: answered)."""
        with self.session() as s:
            rows = s.exec(select(LabelTask.state).where(LabelTask.strategy == REVIEW)).all()
        return dict(Counter(rows))

    def predictions_of(self, chat_ids: Sequence[int]) -> dict[int, list[Prediction]]:
        """Every stored prediction of these chats, oldest version first."""
        out: dict[int, list[Prediction]] = {}
        with self.session() as s:
            for start in range(0, len(chat_ids), 5000):
                part = list(chat_ids[start : start + 5000])
                rows = s.exec(
                    select(Prediction)
                    .where(col(Prediction.chat_id).in_(part))
                    .order_by(col(Prediction.model_version))
                ).all()
                for p in rows:
                    out.setdefault(p.chat_id, []).append(p)
        return out
