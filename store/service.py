"""What the sentiment service keeps durable: its API keys (hashed) and shadow-scoring counts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from store.base import StoreBase
from store.errors import StoreError
from store.models import ApiKey, ShadowStat, utcnow

__all__ = ["ServiceStore", "ShadowCounts"]


@dataclass(frozen=True)
class ShadowCounts:
    """One flush of a service's shadow scoring for a (candidate, production) pair."""

    version: int
    production: int
    messages: int
    agreed: int
    escalated: int
    production_escalated: int


class ServiceStore(StoreBase):
    """API keys and shadow counts."""

    def add_api_key(
        self, name: str, key_hash: str, prefix: str, *, by: str | None = None
    ) -> ApiKey:
        """Record a new key; a name already held by an active key is refused."""
        with self.session() as s:
            if s.exec(
                select(ApiKey).where(ApiKey.name == name, col(ApiKey.revoked_at).is_(None))
            ).first():
                raise StoreError(f"an active API key named {name!r} exists; revoke it first")
            key = ApiKey(name=name, key_hash=key_hash, prefix=prefix, created_by=by)
            s.add(key)
            try:
                s.commit()
            except IntegrityError:  # a concurrent create with the same name won
                raise StoreError(f"an active API key named {name!r} exists") from None
            s.refresh(key)
            return key

    def api_keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.exec(select(ApiKey).order_by(col(ApiKey.id))).all())

    def active_api_keys(self) -> dict[str, str]:
        """sha256 of each active key -> its name: what the service checks requests against."""
        with self.session() as s:
            rows = s.exec(
                select(ApiKey.key_hash, ApiKey.name).where(col(ApiKey.revoked_at).is_(None))
            ).all()
            return {h: n for h, n in rows}

    def revoke_api_key(self, name: str, *, by: str | None = None) -> bool:
        """Revoke the active key of that name; False if there is none."""
        with self.session() as s:
            result = s.execute(
                update(ApiKey)
                .where(col(ApiKey.name) == name, col(ApiKey.revoked_at).is_(None))
                .values(revoked_at=utcnow(), revoked_by=by)
            )
            s.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_shadow_counts(self, counts: ShadowCounts) -> None:
        """Add one flush to the pair's totals (several service processes add concurrently)."""
        if counts.messages <= 0:
            return
        pair = (col(ShadowStat.version) == counts.version) & (
            col(ShadowStat.production) == counts.production
        )
        with self.session() as s:
            s.execute(
                self._insert_ignore(ShadowStat, ["version", "production"]).values(
                    version=counts.version,
                    production=counts.production,
                    messages=0,
                    agreed=0,
                    escalated=0,
                    production_escalated=0,
                    updated_at=utcnow(),
                )
            )
            s.execute(
                update(ShadowStat)
                .where(pair)
                .values(
                    messages=col(ShadowStat.messages) + counts.messages,
                    agreed=col(ShadowStat.agreed) + counts.agreed,
                    escalated=col(ShadowStat.escalated) + counts.escalated,
                    production_escalated=col(ShadowStat.production_escalated)
                    + counts.production_escalated,
                    updated_at=utcnow(),
                )
            )
            s.commit()

    def shadow_stats(self, version: int) -> list[ShadowStat]:
        with self.session() as s:
            return list(
                s.exec(
                    select(ShadowStat)
                    .where(ShadowStat.version == version)
                    .order_by(col(ShadowStat.production))
                ).all()
            )
