"""Label Studio tasks: which chats were sent where, and each task's life (pushed, answered,
skipped and re-queued, deleted, superseded, moved to another Label Studio)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from store.base import WRITE_CHUNK, StoreBase, rowcount
from store.models import (
    ACTIVE_TASK_SQL,
    REVIEW,
    Annotation,
    LabelTask,
    LoopState,
    SelectionRound,
    utcnow,
)

logger = logging.getLogger(__name__)

#: The LoopState row naming the Label Studio project this store's tasks live in.
LABEL_STUDIO_IDENTITY = "labelstudio"


@dataclass(frozen=True)
class TaskChanges:
    """What reconciling with Label Studio changed."""

    deleted: int = 0  # tasks gone from Label Studio: their chats may be asked again
    deleted_annotated: int = 0  # gone too, but their labels are kept


class TaskStore(StoreBase):
    """Tasks, the selection rounds that chose them, and the Label Studio they live in."""

    def reserve_tasks(
        self,
        project_id: int,
        chat_ids: Sequence[int],
        *,
        strategy: str,
        model_version: int | None,
        selection_scores: Sequence[float | None],
        selection: SelectionRound | None = None,
        instance: str = "",
        overlaps: dict[int, int] | None = None,
    ) -> int:
        """Record chats as ``pending`` for a project before they are imported, so that a chat
        can never be chosen twice; a chat that already has an active task is left alone.
        ``selection``, when given, is stored in the same transaction and the tasks point
        to it: which round chose them is never lost or half-written. ``overlaps`` names
        the chats to ask of several annotators (how many); the rest ask one."""
        now = utcnow()
        overlaps = overlaps or {}
        rows = [
            {
                "chat_id": cid,
                "project_id": project_id,
                "state": "pending",
                "state_at": now,
                "ls_instance": instance,
                "strategy": strategy,
                "model_version": model_version,
                "selection_score": score,
                "selected_at": now,
                "overlap": overlaps.get(cid, 1),
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
                result = s.execute(
                    self._insert_ignore(LabelTask, ["chat_id", "project_id"], ACTIVE_TASK_SQL), rows
                )
                written = rowcount(result)
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

    def tasks_of_chat(self, chat_id: int) -> list[LabelTask]:
        """Every task a chat had, oldest first (history included)."""
        with self.session() as s:
            return list(
                s.exec(
                    select(LabelTask)
                    .where(LabelTask.chat_id == chat_id)
                    .order_by(col(LabelTask.id))
                ).all()
            )

    def pending_tasks(self, project_id: int) -> list[LabelTask]:
        return self.tasks(project_id, ["pending"])

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
                            col(LabelTask.state) == "pending",
                        )
                        .values(ls_task_id=ls_task_id, state="pushed", pushed_at=now, state_at=now)
                    )
                s.commit()

    def task_chat_map(self, project_id: int, instance: str = "") -> dict[int, int]:
        """Label Studio task id -> chat id for this project of this Label Studio."""
        with self.session() as s:
            rows = s.exec(
                select(LabelTask.ls_task_id, LabelTask.chat_id).where(
                    LabelTask.project_id == project_id,
                    LabelTask.ls_instance == instance,
                    col(LabelTask.ls_task_id).is_not(None),
                )
            ).all()
        return {t: c for t, c in rows if t is not None}

    def known_ls_task_ids(self, instance: str) -> set[int]:
        """Every Label Studio task id this store ever recorded in this Label Studio, in any
        state: a task found there under one of these ids is never adopted as a new one."""
        with self.session() as s:
            rows = s.exec(
                select(LabelTask.ls_task_id).where(
                    LabelTask.ls_instance == instance, col(LabelTask.ls_task_id).is_not(None)
                )
            ).all()
        return {int(r) for r in rows if r is not None}

    def open_task_count(self, project_id: int | None = None) -> int:
        """Tasks waiting for an annotator (pushed, no answer yet); skipped ones do not wait."""
        with self.session() as s:
            q = select(func.count()).select_from(LabelTask).where(LabelTask.state == "pushed")
            if project_id is not None:
                q = q.where(LabelTask.project_id == project_id)
            return int(s.exec(q).one())

    def tasks(self, project_id: int, states: Sequence[str] | None = None) -> list[LabelTask]:
        with self.session() as s:
            q = select(LabelTask).where(LabelTask.project_id == project_id)
            if states:
                q = q.where(col(LabelTask.state).in_(states))
            return list(s.exec(q.order_by(col(LabelTask.id))).all())

    def task_states(self) -> dict[str, int]:
        """How many tasks are in each state (all projects)."""
        with self.session() as s:
            rows = s.exec(select(LabelTask.state, func.count()).group_by(LabelTask.state)).all()
        return {state: int(n) for state, n in rows}

    # -- a task's life ------------------------------------------------------------------------

    def in_label_studio(self, project_id: int, instance: str) -> list[LabelTask]:
        """Tasks recorded as imported into this Label Studio project and not history yet."""
        return [
            t
            for t in self.tasks(project_id, ["pushed", "skipped", "annotated"])
            if t.ls_instance == instance
        ]

    def release_deleted(
        self, recorded: Sequence[LabelTask], existing: Collection[int]
    ) -> TaskChanges:
        """Of the ``recorded`` tasks (:meth:`in_label_studio`, read before Label Studio was
        listed, so a push running meanwhile adds none that the listing could miss), those
        not ``existing`` there any more: one not answered is ``deleted`` (its chat may be
        chosen again); an answered one keeps its labels."""
        present = set(existing)
        deleted = kept = 0
        for task in recorded:
            if task.ls_task_id in present:
                continue
            if task.state == "annotated":
                kept += 1
                continue
            deleted += self._set_state(task.id, task.state, "deleted")
        if deleted or kept:
            logger.warning(
                "%d tasks were deleted in Label Studio and released (%d more had labels: kept)",
                deleted,
                kept,
            )
        return TaskChanges(deleted=deleted, deleted_annotated=kept)

    def skipped_due(self, project_id: int, older_than: datetime) -> list[LabelTask]:
        """Skipped tasks whose chat is due to be asked again."""
        return [
            t
            for t in self.tasks(project_id, ["skipped"])
            if t.state_at is None or t.state_at <= older_than
        ]

    def requeue(self, task: LabelTask) -> bool:
        """The skipped ``task`` becomes ``requeued`` history and a new ``pending`` task asks
        its chat again (the caller imports it); False if it is no longer skipped."""
        with self.session() as s:
            if not _move_state(s, task.id, "skipped", "requeued"):
                return False
            s.add(
                LabelTask(
                    chat_id=task.chat_id,
                    project_id=task.project_id,
                    ls_instance=task.ls_instance,
                    state="pending",
                    state_at=utcnow(),
                    strategy="requeue",
                    model_version=task.model_version,
                    selection_score=task.selection_score,
                    round_id=task.round_id,
                )
            )
            s.commit()
        return True

    def _set_state(self, task_id: int | None, old: str, new: str) -> int:
        with self.session() as s:
            changed = _move_state(s, task_id, old, new)
            s.commit()
            return changed

    # -- which Label Studio -------------------------------------------------------------------

    def label_studio_identity(self) -> dict[str, Any] | None:
        """The Label Studio project this store's tasks live in: its identity and URL."""
        with self.session() as s:
            row = s.get(LoopState, LABEL_STUDIO_IDENTITY)
            return dict(row.value) if row is not None and row.value else None

    def adopt_label_studio(self, identity: str, url: str) -> int:
        """Record the Label Studio project in use; tasks and annotations from before
        instances were recorded (identity "") are taken to belong to it. Returns how many."""
        with self.session() as s:
            _put(s, LABEL_STUDIO_IDENTITY, {"identity": identity, "url": url})
            n = 0
            for model in (LabelTask, Annotation):
                result = s.exec(
                    update(model).where(col(model.ls_instance) == "").values(ls_instance=identity)
                )
                n += int(result.rowcount or 0)
            s.commit()
        return n

    def resync(self, project_id: int, identity: str, url: str) -> int:
        """Move to another Label Studio project (a reset or a new server): every task not
        answered yet becomes ``moved`` history and a new ``pending`` task in ``identity``
        takes its place, to be imported there. Answered tasks and their labels stay as they
        are; unanswered review tasks end as history (the next version flags again).
        Returns the tasks to re-create."""
        moved = 0
        with self.session() as s:
            rows = s.exec(
                select(LabelTask).where(
                    col(LabelTask.state).in_(["pending", "pushed", "skipped"]),
                    LabelTask.ls_instance != identity,
                )
            ).all()
            for task in rows:
                task.state, task.state_at = "moved", utcnow()
                s.add(task)
                s.flush()
                if task.strategy == REVIEW:  # flagged again after the next version
                    continue
                s.add(
                    LabelTask(
                        chat_id=task.chat_id,
                        project_id=project_id,
                        ls_instance=identity,
                        state="pending",
                        state_at=utcnow(),
                        strategy=task.strategy,
                        model_version=task.model_version,
                        selection_score=task.selection_score,
                        round_id=task.round_id,
                    )
                )
                moved += 1
            _put(s, LABEL_STUDIO_IDENTITY, {"identity": identity, "url": url})
            s.commit()
        return moved


def _move_state(s: Session, task_id: int | None, old: str, new: str) -> int:
    result = s.exec(
        update(LabelTask)
        .where(col(LabelTask.id) == task_id, col(LabelTask.state) == old)
        .values(state=new, state_at=utcnow())
    )
    return int(result.rowcount or 0)


def _put(s: Session, name: str, value: dict[str, Any]) -> None:
    row = s.get(LoopState, name)
    if row is None:
        s.add(LoopState(name=name, value=value))
    else:
        row.value, row.updated_at = value, utcnow()
        s.add(row)
