"""Model versions and promotions: the registry's durable half."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy import text as sa_text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from store.annotations import TrainingExample
from store.base import StoreBase, is_connection_error
from store.errors import PromotionConflict, StoreError
from store.models import TEACHER, LoopState, ModelVersion, Promotion, utcnow

logger = logging.getLogger(__name__)

#: ``promote(expected=...)`` default: promote whatever production is now.
ANY_PRODUCTION = object()
#: The LoopState row that pauses automatic promotion.
AUTO_PROMOTION_PAUSE = "auto_promotion_paused"


def _name(version: object) -> str:
    return f"v{version}" if isinstance(version, int) else "none"


def _set_state(session: Session, name: str, value: dict[str, Any]) -> None:
    row = session.get(LoopState, name)
    if row is None:
        session.add(LoopState(name=name, value=value))
    else:
        row.value, row.updated_at = value, utcnow()
        session.add(row)


#: PostgreSQL channel notified (at commit) on every promotion and rollback: services LISTEN on
#: it to switch versions at once instead of at their next poll of the registry.
PRODUCTION_CHANNEL = "sentiloop_production"

#: Key of the PostgreSQL advisory lock that serialises promotions.
_PROMOTION_LOCK = 0x5E171007


@dataclass(frozen=True)
class Learned:
    """The labels a version learned: (annotation record id, revision) pairs, and for
    versions trained before revisions were recorded, Label Studio annotation ids with when
    that version was made."""

    revisions: frozenset[tuple[int, int]]
    unversioned: dict[int, datetime]

    def knows(self, example: TrainingExample) -> bool:
        """Whether this exact value of the label was learned: an annotation edited since
        (a new revision) is new, even when it changed while the version was training."""
        if (example.record_id, example.revision) in self.revisions:
            return True
        learned_at = self.unversioned.get(example.annotation_id)
        return learned_at is not None and example.pulled_at <= learned_at


class VersionStore(StoreBase):
    """Model versions, promotions and rollbacks."""

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

    def newest_version(self) -> ModelVersion | None:
        """The newest servable version (a distillation teacher is not one)."""
        with self.session() as s:
            return s.exec(
                select(ModelVersion)
                .where(ModelVersion.status != TEACHER)
                .order_by(col(ModelVersion.number).desc())
                .limit(1)
            ).first()

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

    def newest_candidate(self, above: int) -> ModelVersion | None:
        """The version waiting for promotion: the newest candidate numbered above ``above``
        (production's number) whose checkpoint still exists. Read every second by each
        service, so one indexed row, not every version with its lineage."""
        with self.session() as s:
            return s.exec(
                select(ModelVersion)
                .where(
                    ModelVersion.status == "candidate",
                    col(ModelVersion.number) > above,
                    ModelVersion.checkpoint_deleted == False,  # noqa: E712
                )
                .order_by(col(ModelVersion.number).desc())
                .limit(1)
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
        expected: int | object | None = ANY_PRODUCTION,
        operator_id: int | None = None,
    ) -> Promotion:
        """Make ``number`` the one production version and record who did it and why, in one
        transaction. With ``expected`` (the production version a gate compared against, or
        None for none) it is a compare-and-swap: if production changed meanwhile (a rollback,
        another promotion), nothing changes and PromotionConflict says so. The partial unique
        index refuses a second production row, so of two concurrent promotions one wins and
        the other retries against the new state."""
        return self._with_retries(
            lambda: self._promote_once(
                number,
                (actor, operator_id),
                reason,
                action,
                gate or {},
                forced,
                expected,
                pause=None,
            )
        )

    def rollback(
        self, *, actor: str, reason: str = "", pause: bool = True, operator_id: int | None = None
    ) -> Promotion:
        """Make the version below the current one in the production history production again.
        The history is a stack: promotions push, rollbacks pop, so rolling back twice goes two
        versions back. With ``pause`` automatic promotion stops until :meth:`resume_auto_promotion`
        (a person decided against the newer versions: the scheduler must not undo that)."""

        def once() -> Promotion:
            history = self.production_history()
            if len(history) < 2:
                raise StoreError("nothing to roll back to: the production history has one version")
            return self._promote_once(
                history[-2],
                (actor, operator_id),
                reason or "rollback",
                "rollback",
                {},
                False,
                history[-1],
                pause={"by": actor, "reason": reason or "rollback", "from": history[-1]}
                if pause
                else None,
            )

        return self._with_retries(once)

    def _with_retries(self, fn: Callable[[], Promotion]) -> Promotion:
        for attempt in range(10):
            try:
                return fn()
            except (IntegrityError, OperationalError) as exc:
                # a lost race (unique index) or a busy/locked database: try again afresh
                if attempt == 9 or (isinstance(exc, OperationalError) and is_connection_error(exc)):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise StoreError("unreachable")  # pragma: no cover

    def _promote_once(
        self,
        number: int,
        who: tuple[str, int | None],
        reason: str,
        action: str,
        gate: dict[str, Any],
        forced: bool,
        expected: int | object | None,
        pause: dict[str, Any] | None,
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
            if target.status == TEACHER:
                raise StoreError(
                    f"v{number} is a distillation teacher: it labels the pool for the model "
                    "it teaches and is never served; promote its student"
                )
            current = s.exec(
                select(ModelVersion).where(ModelVersion.status == "production")
            ).first()
            previous = current.number if current else None
            if expected is not ANY_PRODUCTION and previous != expected:
                raise PromotionConflict(
                    f"production is {_name(previous)}, not {_name(expected)} as when v{number} "
                    "was compared: nothing changed"
                )
            if current is not None and previous != number:
                current.status = "archived"
                s.add(current)
                s.flush()  # the old row leaves 'production' before the new one enters it
            target.status, target.promoted_at = "production", utcnow()
            s.add(target)
            record = Promotion(
                version=number,
                previous=previous,
                action=action,
                actor=who[0],
                operator_id=who[1],
                reason=reason,
                forced=forced,
                gate=gate,
            )
            s.add(record)
            if pause is not None:
                _set_state(s, AUTO_PROMOTION_PAUSE, {**pause, "at": utcnow().isoformat()})
            if self.engine.dialect.name == "postgresql":
                s.execute(sa_text(f"NOTIFY {PRODUCTION_CHANNEL}"))  # delivered at commit
            s.commit()
            s.refresh(record)
            return record

    def promotions(self, limit: int = 50) -> list[Promotion]:
        with self.session() as s:
            return list(
                s.exec(select(Promotion).order_by(col(Promotion.id).desc()).limit(limit)).all()
            )

    def production_history(self) -> list[int]:
        """The production versions as a stack, oldest first, the current one last: replaying
        the audit trail, a promotion pushes its version, a rollback pops back to its own."""
        with self.session() as s:
            rows = s.exec(select(Promotion).order_by(col(Promotion.id))).all()
        stack: list[int] = []
        for p in rows:
            if p.action == "rollback" and p.version in stack:
                del stack[stack.index(p.version) + 1 :]
            elif not stack or stack[-1] != p.version:
                stack.append(p.version)
        return stack

    def rollback_target(self) -> int | None:
        """The version a rollback would make production: the one below the current one."""
        history = self.production_history()
        return history[-2] if len(history) >= 2 else None

    # -- automatic promotion ------------------------------------------------------------------

    def auto_promotion_paused(self) -> dict[str, Any] | None:
        """Who paused automatic promotion, when and why (a manual rollback), or None."""
        with self.session() as s:
            row = s.get(LoopState, AUTO_PROMOTION_PAUSE)
            return dict(row.value) if row is not None and row.value else None

    def resume_auto_promotion(self) -> bool:
        """Let the scheduler promote again; False when it was not paused."""
        with self.session() as s:
            row = s.get(LoopState, AUTO_PROMOTION_PAUSE)
            if row is None or not row.value:
                return False
            s.delete(row)
            s.commit()
            return True

    def warm_start_chain(self, number: int) -> list[ModelVersion]:
        """The version and, while it was warm-started (incremental), its parents: what its
        weights have learned from."""
        chain: list[ModelVersion] = []
        current: int | None = number
        while current is not None and current not in {v.number for v in chain}:
            version = self.version(current)
            if version is None:
                break
            chain.append(version)
            current = version.parent if version.mode == "incremental" else None
        return chain

    def lineage(self, number: int) -> list[int]:
        """Annotation ids a version learned from: its own training set, plus its parent's
        lineage when it was warm-started (incremental), plus its teacher's when distilled."""
        chain = self.warm_start_chain(number)
        teachers = [t for v in chain if v.teacher is not None and (t := self.version(v.teacher))]
        return sorted({a for v in (*chain, *teachers) for a in v.annotation_ids})

    def pool_chats(self, number: int) -> list[int]:
        """Unlabelled chats a version learned a teacher's labels on, along its warm-start
        chain (empty unless distilled)."""
        return sorted({c for v in self.warm_start_chain(number) for c in v.pool_chat_ids})

    def learned(self, number: int) -> Learned:
        """What a version learned along its warm-start chain, revision by revision."""
        revisions: set[tuple[int, int]] = set()
        unversioned: dict[int, datetime] = {}
        for version in self.warm_start_chain(number):
            if version.annotation_revisions:
                revisions.update((int(k), v) for k, v in version.annotation_revisions.items())
            else:  # trained before revisions were recorded (migration 0008)
                for a in version.annotation_ids:
                    if a not in unversioned or version.created_at > unversioned[a]:
                        unversioned[a] = version.created_at
        return Learned(frozenset(revisions), unversioned)

    def mark_checkpoint_deleted(self, number: int) -> None:
        with self.session() as s:
            s.exec(
                update(ModelVersion)
                .where(col(ModelVersion.number) == number)
                .values(checkpoint_deleted=True)
            )
            s.commit()
