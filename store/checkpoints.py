"""The checkpoint ledger: which checkpoint directories this installation is writing.

A retrain claims a version number and its directory here before it writes anything, and
registering the version deletes the claim in the same transaction as it inserts the
``ModelVersion`` row. So an intent that is still present when no retrain runs was left by a
run that did not finish, and the directory it names was written (if at all) by this
installation and is referenced by nothing: the only kind of directory that may be deleted.
A directory the store does not know is never deleted for that reason alone (it may be a
valid checkpoint that an older, restored store has forgotten).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from pathlib import PurePath

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from store.errors import StoreError
from store.models import CheckpointIntent, ModelVersion
from store.store import Store

__all__ = ["claim_checkpoint", "drop_intent", "intents", "register_version"]

_CLAIM_ATTEMPTS = 10


def claim_checkpoint(
    store: Store,
    *,
    owner: str,
    path_for: Callable[[int], str],
    taken: Collection[int] = (),
) -> CheckpointIntent:
    """Record the intent to write the next version's checkpoint and return it.

    The number is one more than every number registered, claimed, or in ``taken`` (the
    numbers the caller found on disk), so it never collides with a directory left by a
    store that was later restored to an older state. Two concurrent claims cannot take the
    same number: the unique constraint refuses the second, which tries the next one."""
    floor = max(taken, default=0)
    for attempt in range(_CLAIM_ATTEMPTS):
        with store.session() as s:
            registered = s.exec(select(func.max(ModelVersion.number))).one() or 0
            claimed = s.exec(select(func.max(CheckpointIntent.number))).one() or 0
            number = max(int(registered), int(claimed), floor) + 1
            path = path_for(number)
            intent = CheckpointIntent(
                number=number,
                name=PurePath(path).name,
                path=path,
                token=uuid.uuid4().hex,
                owner=owner[:128],
            )
            s.add(intent)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                time.sleep(0.05 * (attempt + 1))
                continue
            s.refresh(intent)
            return intent
    raise StoreError(f"could not claim a model version number after {_CLAIM_ATTEMPTS} attempts")


def register_version(store: Store, version: ModelVersion, intent: CheckpointIntent) -> ModelVersion:
    """Insert the version and delete its intent in one transaction.

    Refused when the intent is gone: another retrain judged this run dead (it lost its
    lease) and cleaned up after it, so the directory must not be registered."""
    if version.number != intent.number or version.checkpoint_path != intent.path:
        raise StoreError(
            f"v{version.number} at {version.checkpoint_path} does not match its intent "
            f"(v{intent.number} at {intent.path})"
        )
    with store.session() as s:
        gone = s.execute(
            delete(CheckpointIntent).where(
                col(CheckpointIntent.id) == intent.id,
                col(CheckpointIntent.token) == intent.token,
            )
        )
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            s.rollback()
            raise StoreError(
                f"the intent for {intent.name} was cleaned up by another retrain (this run "
                f"lost its lease); v{intent.number} is not registered"
            )
        s.add(version)
        s.commit()
        s.refresh(version)
        return version


def intents(store: Store) -> list[CheckpointIntent]:
    """Every intent still recorded, oldest number first."""
    with store.session() as s:
        return list(s.exec(select(CheckpointIntent).order_by(col(CheckpointIntent.number))).all())


def drop_intent(store: Store, intent: CheckpointIntent) -> None:
    """Forget an intent (after its directory was cleaned up, or by its own failed run)."""
    with store.session() as s:
        s.execute(
            delete(CheckpointIntent).where(
                col(CheckpointIntent.id) == intent.id,
                col(CheckpointIntent.token) == intent.token,
            )
        )
        s.commit()
