"""Erasure on request (`sentiloop erase`): a customer's chats leave Label Studio and the store,
the erasure is audited, and the versions that learned from them are named so the operator can
retrain without them.

Label Studio first, then the store in one transaction: if Label Studio fails half-way nothing
is erased from the store and running the command again finishes the job (deleting a task that
is already gone is fine). Push and pull are held off meanwhile so neither re-creates a task or
re-imports an annotation of a chat being erased; a retrain that had already read its labels
makes a version that `models show` flags like the others."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.context import Context
from orchestrator.errors import StepError
from orchestrator.holding import steps_held
from store import Erasure, ErasureIn, Operator

__all__ = ["ErasureReport", "erase", "versions_with_erased"]

logger = logging.getLogger(__name__)

HELD_STEPS = ("push", "pull")


@dataclass(frozen=True)
class ErasureReport:
    erasure: Erasure
    tasks_elsewhere: int  # tasks recorded in another Label Studio than the configured one
    versions: list[int]  # versions that learned from erased chats, this erasure or earlier


def erase(
    ctx: Context,
    *,
    by: Operator,
    chats: Sequence[str] = (),
    customer: str | None = None,
    reason: str = "",
    wait_s: float = 600,
) -> ErasureReport:
    """Erase the chats with these source ids, or every chat of ``customer`` (the metadata
    column SENTILOOP_CUSTOMER_FIELD), everywhere we put them."""
    if bool(chats) == (customer is not None):
        raise StepError("name the chats to erase (--chat ID ...) or one customer (--customer)")
    store = ctx.store
    with steps_held(store, HELD_STEPS, wait_s, StepError):
        if customer is not None:
            field = ctx.settings.customer_field
            ids = store.chat_ids_of_customer(field, customer)
            if not ids:
                raise StepError(f"no chat has that customer key (SENTILOOP_CUSTOMER_FIELD={field})")
        else:
            found = store.chat_ids_by_source(list(chats))
            if len(found) < len(set(chats)):
                missing = len(set(chats)) - len(found)
                raise StepError(f"{missing} of the chat ids are not in the store: nothing erased")
            ids = list(found.values())
        deleted, elsewhere = _delete_label_studio_tasks(ctx, ids)
        erasure = store.erase_chats(
            ids,
            ErasureIn(
                actor=by.name,
                operator_id=by.id,
                reason=reason,
                selector="customer" if customer is not None else "chat",
                label_studio_tasks=deleted,
            ),
        )
    logger.info(
        "erasure #%s by %s: %d chats, %d annotations, %d Label Studio tasks",
        erasure.id,
        by.name,
        erasure.chats,
        erasure.annotations,
        deleted,
    )
    return ErasureReport(erasure, elsewhere, sorted(versions_with_erased(ctx)))


def _delete_label_studio_tasks(ctx: Context, chat_ids: list[int]) -> tuple[int, int]:
    """Delete the chats' tasks (and with them their annotations) from the configured Label
    Studio project: those the store recorded, and any the store missed (a push that died
    between import and bookkeeping). Returns (deleted, recorded in another instance)."""
    tasks = ctx.store.erasable_tasks(chat_ids)
    if not tasks:  # never chosen for labelling: never sent to Label Studio
        return 0, 0
    client = ctx.labeling()
    project = client.find_project(ctx.settings.project_title)
    if project is None:
        return 0, len(tasks)
    identity = client.project_identity(project)
    here = [t for t in tasks if t.ls_instance in ("", identity)]
    doomed = {t.ls_task_id for t in here if t.ls_task_id is not None}
    elsewhere = len(tasks) - len(here)
    sources = {c.source_id for c in ctx.store.chats_by_id(chat_ids).values()}
    for source, task_ids in client.tasks_by_chat_id(project).items():
        if source in sources:
            doomed.update(task_ids)
    for task_id in sorted(doomed):
        client.delete_task(task_id)
    return len(doomed), elsewhere


def versions_with_erased(ctx: Context) -> dict[int, dict[int, int]]:
    """Version number -> {erasure id: erased annotations it learned} (its warm-start chain
    included), for every version that learned from an erased chat."""
    store = ctx.store
    if not store.erasures():
        return {}
    flagged = {}
    for version in store.versions():
        hits = store.erased_learned(version.number)
        if hits:
            flagged[version.number] = hits
    return flagged
