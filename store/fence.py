"""Fencing: a step's writes commit only while it still holds its lease.

A lease's ``owner`` is unique per acquisition, so it is the fencing token. While a step runs
inside :func:`fenced`, every commit of the store's sessions first renews the lease with
``UPDATE lease ... WHERE name = :name AND owner = :owner`` in the same transaction: the
update takes the write lock (SQLite) or the row lock (PostgreSQL) before anything commits, so
a worker whose lease expired and was taken over cannot write, even if it wakes up later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from store.errors import LeaseLost
from store.models import Lease, utcnow

__all__ = ["Fence", "active", "check", "fenced"]


@dataclass(frozen=True)
class Fence:
    """A held lease: its name, its owner (the token) and how long a renewal lasts."""

    name: str
    owner: str
    ttl: timedelta
    store_url: str


_ACTIVE: ContextVar[Fence | None] = ContextVar("sentiloop_fence", default=None)


def active() -> Fence | None:
    return _ACTIVE.get()


@contextmanager
def fenced(fence: Fence) -> Iterator[Fence]:
    """Check ``fence`` at every commit made in this context (thread or task)."""
    token = _ACTIVE.set(fence)
    try:
        yield fence
    finally:
        _ACTIVE.reset(token)


def check(session: Session, fence: Fence) -> None:
    """Renew the lease in the session's transaction, or refuse the commit."""
    result = session.execute(
        update(Lease)
        .where(col(Lease.name) == fence.name, col(Lease.owner) == fence.owner)
        .values(expires_at=utcnow() + fence.ttl)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"step {fence.name!r} lost its lease (another worker took it over): "
            "nothing more is written by this run"
        )
