"""The consensus of chats several annotators answered, and asking one more annotator where it
is too uncertain to train on (issue #16). The store keeps the answers and the verdicts; the
verdicts themselves come from :mod:`quality`, which the orchestrator runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import String, cast, delete, func
from sqlmodel import col, select

from store.annotations import Answer, answer_groups, review_answer
from store.base import StoreBase
from store.models import ACTIVE_TASK_STATES, REVIEW, Annotation, ConsensusLabel, LabelTask, utcnow

__all__ = ["AnswerGroup", "ConsensusStore"]


@dataclass(frozen=True)
class AnswerGroup:
    """A chat's answers from several annotators, and the task that holds the chat now (None
    when none does: its task was deleted or re-queued)."""

    chat_id: int
    answers: list[Answer]
    task: LabelTask | None

    @property
    def voters(self) -> int:
        return len({a.voter for a in self.answers})


class ConsensusStore(StoreBase):
    """Chats with several answers, their consensus, and re-asking."""

    def answers(self, chat_ids: Sequence[int] | None = None) -> dict[int, list[Answer]]:
        """Every (or these) chats' answers, oldest first."""
        with self.session() as s:
            return answer_groups(s, chat_ids)

    def answer_groups(self) -> list[AnswerGroup]:
        """The chats that two or more annotators answered (reviews aside), with their
        holding task."""
        voter = func.coalesce(Annotation.annotator, cast(Annotation.id, String))
        with self.session() as s:
            candidates = s.exec(
                select(Annotation.chat_id)
                .where(
                    Annotation.cancelled == False,  # noqa: E712
                    col(Annotation.label).is_not(None),
                    ~review_answer(),
                )
                .group_by(col(Annotation.chat_id))
                .having(func.count(func.distinct(voter)) > 1)
            ).all()
            groups = answer_groups(s, list(candidates)) if candidates else {}
            # a reviewer's answer is not a vote: it replaces the label (store.annotations)
            votes = {c: [x for x in a if not x.review] for c, a in groups.items()}
            several = {c: a for c, a in votes.items() if len({x.voter for x in a}) > 1}
            tasks = {
                t.chat_id: t
                for t in s.exec(
                    select(LabelTask).where(
                        col(LabelTask.chat_id).in_(list(several)),
                        col(LabelTask.state).in_(ACTIVE_TASK_STATES),
                        LabelTask.strategy != REVIEW,
                    )
                ).all()
            }
        return [AnswerGroup(c, a, tasks.get(c)) for c, a in sorted(several.items())]

    def consensus_labels(self) -> dict[int, ConsensusLabel]:
        with self.session() as s:
            return {c.chat_id: c for c in s.exec(select(ConsensusLabel)).all()}

    def save_consensus(self, rows: Sequence[ConsensusLabel]) -> int:
        """Make these the consensus labels: rows of other chats (no longer answered by
        several annotators) go, an unchanged verdict keeps its time. Returns rows changed."""
        changed = 0
        with self.session() as s:
            known = {c.chat_id: c for c in s.exec(select(ConsensusLabel)).all()}
            gone = set(known) - {r.chat_id for r in rows}
            if gone:
                s.exec(delete(ConsensusLabel).where(col(ConsensusLabel.chat_id).in_(gone)))
                changed += len(gone)
            for row in rows:
                old = known.get(row.chat_id)
                if old is None:
                    s.add(row)
                    changed += 1
                    continue
                fields = ("label", "quality", "agreement", "votes", "method", "model_version")
                new = (*(getattr(row, f) for f in fields), row.answers, row.state)
                if (*(getattr(old, f) for f in fields), old.answers, old.state) == new:
                    continue
                for f in (*fields, "answers", "state"):
                    setattr(old, f, getattr(row, f))
                old.decided_at = utcnow()
                s.add(old)
                changed += 1
            s.commit()
        return changed

    def ask_more(self, task_id: int, overlap: int) -> None:
        """Record that a task now asks ``overlap`` annotators: it waits for them again."""
        with self.session() as s:
            task = s.get(LabelTask, task_id)
            if task is None:
                return
            task.overlap = overlap
            if task.state in ("annotated", "skipped"):
                task.state, task.state_at = "pushed", utcnow()
            s.add(task)
            s.commit()
