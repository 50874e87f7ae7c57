"""Who is who: operator accounts (who may promote, roll back, manage keys and erase; only the
sha256 of an operator's key is kept) and the key that turns annotators' e-mail addresses into
stable pseudonymous ids."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from store.base import StoreBase
from store.errors import StoreError
from store.models import LoopState, Operator, utcnow

__all__ = ["IdentityStore"]

FIRST_OPERATOR = "first_operator"  # the LoopState row the first operator claims
PSEUDONYM_KEY = "pseudonym_key"  # the LoopState row of the annotator pseudonyms' key


class IdentityStore(StoreBase):
    """Operator accounts (the roles' meaning lives with whoever checks them) and the
    pseudonym key."""

    def add_operator(
        self, name: str, role: str, key_hash: str, prefix: str, *, by: str | None
    ) -> Operator:
        """Record an operator; ``by=None`` only for the first one (the store has none yet).
        The first one claims a marker row in the same transaction, so of two concurrent
        first operators one fails instead of both standing without an admin's consent."""
        with self.session() as s:
            if by is None and (
                s.exec(select(func.count()).select_from(Operator)).one()
                or not s.exec(
                    self._insert_ignore(LoopState, ["name"]).values(
                        name=FIRST_OPERATOR, value={"name": name}, updated_at=utcnow()
                    )
                ).all()
            ):
                raise StoreError("operators exist already: an admin's key is needed")
            if s.exec(
                select(Operator).where(Operator.name == name, col(Operator.revoked_at).is_(None))
            ).first():
                raise StoreError(f"an operator named {name!r} exists; revoke it first")
            row = Operator(name=name, role=role, key_hash=key_hash, prefix=prefix, created_by=by)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:  # a concurrent create with the same name won
                raise StoreError(f"an operator named {name!r} exists") from None
            s.refresh(row)
            return row

    def operator_by_key(self, key_hash: str) -> Operator | None:
        """The active operator holding the key with this sha256."""
        with self.session() as s:
            return s.exec(
                select(Operator).where(
                    Operator.key_hash == key_hash, col(Operator.revoked_at).is_(None)
                )
            ).first()

    def operators(self) -> list[Operator]:
        with self.session() as s:
            return list(s.exec(select(Operator).order_by(col(Operator.id))).all())

    def has_operators(self) -> bool:
        with self.session() as s:
            return bool(s.exec(select(func.count()).select_from(Operator)).one())

    def revoke_operator(self, name: str, *, by: str) -> bool:
        """Revoke the active operator of that name; False if there is none. The last active
        admin cannot be revoked: nobody could manage operators afterwards."""
        with self.session() as s:
            row = s.exec(
                select(Operator).where(Operator.name == name, col(Operator.revoked_at).is_(None))
            ).first()
            if row is None:
                return False
            admins = s.exec(
                select(func.count())
                .select_from(Operator)
                .where(Operator.role == "admin", col(Operator.revoked_at).is_(None))
            ).one()
            if row.role == "admin" and admins <= 1:
                raise StoreError(f"{name!r} is the last admin; create another admin first")
            s.execute(
                update(Operator)
                .where(col(Operator.id) == row.id)
                .values(revoked_at=utcnow(), revoked_by=by)
            )
            s.commit()
            return True

    def pseudonym_key(self, configured: bytes | None) -> bytes:
        """The key of annotator pseudonyms: ``configured`` (a setting) or, without one, a
        random key made once and kept here, so every worker makes the same ids. A configured
        key must stay the one the store's ids were made with (its fingerprint is kept), else
        one annotator would get two ids."""
        key = self._pseudonym_key(configured, create=True)
        assert key is not None
        return key

    def kept_pseudonym_key(self, configured: bytes | None) -> bytes | None:
        """As :meth:`pseudonym_key` for a reader: None (and nothing written) until a pull
        made the key."""
        return self._pseudonym_key(configured, create=False)

    def _pseudonym_key(self, configured: bytes | None, *, create: bool) -> bytes | None:
        made = {"key": secrets.token_hex(32)} if configured is None else {}
        fingerprint = hashlib.sha256(configured or b"").hexdigest()[:16]
        with self.session() as s:
            if create:
                s.exec(
                    self._insert_ignore(LoopState, ["name"]).values(
                        name=PSEUDONYM_KEY,
                        value={**made, "fingerprint": fingerprint if configured else None},
                        updated_at=utcnow(),
                    )
                )
                s.commit()
            row = s.get(LoopState, PSEUDONYM_KEY)
            if row is None:
                return None
            kept = row.value
        if configured is None:
            if "key" not in kept:
                raise StoreError(
                    "annotator ids here were made with a configured key: set "
                    "SENTILOOP_PSEUDONYM_SECRET again"
                )
            return bytes.fromhex(kept["key"])
        if kept.get("fingerprint") != fingerprint:
            raise StoreError(
                "annotator ids here were made with another key than SENTILOOP_PSEUDONYM_SECRET "
                + ("(the store's own): unset it" if "key" in kept else "holds now: restore it")
            )
        return configured
