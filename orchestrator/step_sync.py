"""Label Studio sync: push (select and import tasks, re-queue skips), pull (annotations, deleted
tasks) and resync (move to a reset or new Label Studio), each against the project identity
the store's tasks were made in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from labeling import LabelStudioClient, TaskIn
from labeling import PredictionIn as TaskPrediction
from orchestrator.consensus import overlaps, settle
from orchestrator.context import Context, Progress
from orchestrator.errors import LabelStudioMismatch
from privacy import Masker, pseudonym
from store import (
    AnnotationIn,
    Chat,
    LabelTask,
    utcnow,
)

PULL_OVERLAP = timedelta(seconds=30)

logger = logging.getLogger(__name__)


# -- select and push ------------------------------------------------------------------------


def label_studio(ctx: Context) -> tuple[LabelStudioClient, int, str]:
    """The client, the project and its identity, checked against the Label Studio this
    store's tasks live in: a Label Studio that was reset or replaced has other task and
    annotation ids, and syncing with it would map them onto the wrong chats."""
    settings, store = ctx.settings, ctx.store
    client = ctx.labeling()
    project = _ensure_project(ctx, client)
    identity = client.project_identity(project)
    recorded = store.label_studio_identity()
    if recorded is not None and recorded.get("identity") != identity:
        raise LabelStudioMismatch(
            f"Label Studio at {settings.ls_url_shown} holds {settings.project_title!r} as "
            f"{identity}, "
            f"but this store's tasks were made in {recorded.get('identity')} at "
            f"{recorded.get('url')}: nothing was synced. If Label Studio was reset or replaced, "
            "`sentiloop labelstudio resync` re-creates the unanswered tasks there"
        )
    if recorded is None or recorded.get("url") != settings.ls_url_shown:
        adopted = store.adopt_label_studio(identity, settings.ls_url_shown)
        if adopted:
            logger.info("%d tasks and annotations recorded as from %s", adopted, identity)
    return client, project, identity


def _ensure_project(ctx: Context, client: LabelStudioClient) -> int:
    """Our project, created with (or brought up to date with) the labelling guidelines."""
    title = ctx.settings.project_title
    return client.ensure_project(title, "Chats chosen by sentiloop", ctx.settings.guidelines)


def push(
    ctx: Context, progress: Progress, limit: int | None = None, cycle_id: str | None = None
) -> dict[str, Any]:
    """Pick the most informative chats and create their Label Studio tasks, never twice.
    ``limit`` overrides the batch size (the demo's seed batch). Skipped tasks that are due
    are asked again first. With SENTILOOP_STOP_WHEN_STABLE, nothing new is pushed once the
    stopping criterion fires. After a new version, its likely label errors go to the review
    project (orchestrator.review)."""
    from orchestrator import review

    counts = _push_batch(ctx, limit, cycle_id)
    reviews = review.push_reviews(ctx)
    return {**counts, "review": reviews} if reviews else counts


def _push_batch(ctx: Context, limit: int | None, cycle_id: str | None) -> dict[str, Any]:
    from orchestrator import selection

    settings, store = ctx.settings, ctx.store
    _, project, instance = label_studio(ctx)
    requeued = _requeue_skipped(ctx, project)
    reconciled = push_pending(ctx, project, instance)
    open_tasks = store.open_task_count(project)
    room = min(limit or settings.batch_size, settings.max_open_tasks - open_tasks)
    counts: dict[str, Any] = {"project": project, "reconciled": reconciled, "requeued": requeued}
    if room <= 0:
        return {
            **counts,
            "skipped": f"{open_tasks} tasks wait for annotators (SENTILOOP_MAX_OPEN_TASKS)",
        }
    if settings.stop_when_stable:
        signal = selection.stopping_signal(ctx)
        if signal["fired"]:
            return {
                **counts,
                "skipped": "stopping criterion fired: predictions are stable "
                f"(kappa >= {settings.stop_kappa} over {settings.stop_window} versions)",
            }
    batch = selection.choose(ctx, project, room, cycle_id)
    several = overlaps(ctx, batch.chat_ids, batch.selection.model_version)
    store.reserve_tasks(
        project,
        batch.chat_ids,
        strategy=batch.selection.strategy,
        model_version=batch.selection.model_version,
        selection_scores=batch.scores,
        selection=batch.selection,
        instance=instance,
        overlaps=several,
    )
    pushed = push_pending(ctx, project, instance)
    return {
        **counts,
        "strategy": batch.selection.strategy,
        "selected": len(batch.chat_ids),
        **({"asked_of_several": len(several)} if several else {}),
        "pushed": pushed + reconciled,
    }


def _requeue_skipped(ctx: Context, project: int) -> int:
    """Skipped tasks that are due are asked again as new tasks; the skipped one is deleted
    from Label Studio first (its cancelled answer stays in the store's history), so no chat
    ever has two tasks there. A crash in between leaves it deleted: the next pull releases
    the chat, nothing is lost."""
    seconds = ctx.settings.skip_requeue_seconds
    if seconds <= 0:
        return 0
    client, store = ctx.labeling(), ctx.store
    n = 0
    for task in store.skipped_due(project, utcnow() - timedelta(seconds=seconds)):
        if task.ls_task_id is not None:
            client.delete_task(task.ls_task_id)
        n += store.requeue(task)
    return n


def resync(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Move to the Label Studio now configured (after a reset, or a new server): the tasks
    not answered yet are re-created there; answered ones and every label stay as they are."""
    settings, store = ctx.settings, ctx.store
    client = ctx.labeling()
    project = _ensure_project(ctx, client)
    identity = client.project_identity(project)
    recorded = store.label_studio_identity()
    moved = store.resync(project, identity, settings.ls_url_shown)
    pushed = push_pending(ctx, project, identity)
    return {
        "project": project,
        "from": (recorded or {}).get("identity"),
        "to": identity,
        "recreated": moved,
        "pushed": pushed,
    }


def _adopt_imported(
    ctx: Context, project: int, instance: str, listing: dict[str, list[int]] | None = None
) -> list[LabelTask]:
    """Pending tasks that a crashed run already imported are recorded as pushed (a task of
    the chat that this store never recorded: known ones are history). ``listing`` is the
    project's tasks by chat id when the caller has it already. Returns the pending tasks
    still to import."""
    store = ctx.store
    pending = store.pending_tasks(project)
    if not pending:
        return []
    chats = store.chats_by_id([t.chat_id for t in pending])
    known = store.known_ls_task_ids(instance)
    if listing is None:
        listing = ctx.labeling().tasks_by_chat_id(project)
    existing = {source: [tid for tid in ids if tid not in known] for source, ids in listing.items()}
    adopted = {
        t.chat_id: existing[chats[t.chat_id].source_id][0]
        for t in pending
        if existing.get(chats[t.chat_id].source_id)
    }
    if adopted:
        logger.info("adopting %d tasks imported by an interrupted run", len(adopted))
        store.mark_pushed(project, adopted)
        _ask_several(ctx, {t.chat_id: t.overlap for t in pending}, adopted)
    return [t for t in pending if t.chat_id not in adopted]


def _ask_several(ctx: Context, overlap: dict[int, int], task_ids: dict[int, int]) -> None:
    """Label Studio imports every task asking one annotator: the chats to ask of several get
    their overlap now (again after a crash: setting it twice is harmless)."""
    for chat_id, task_id in task_ids.items():
        if overlap.get(chat_id, 1) > 1:
            ctx.labeling().set_overlap(task_id, overlap[chat_id])


def push_pending(
    ctx: Context,
    project: int,
    instance: str,
    meta: Callable[[LabelTask, Chat], str] | None = None,
) -> int:
    """Import every pending task of the project that is not in Label Studio yet. ``meta``
    writes the line annotators see above the chat (default: its shown metadata)."""
    store = ctx.store
    todo = _adopt_imported(ctx, project, instance)
    if not todo:
        return 0
    client = ctx.labeling()
    chats = store.chats_by_id([t.chat_id for t in todo])
    preds: dict[int, Any] = {}
    for version in {t.model_version for t in todo if t.model_version is not None}:
        ids = [t.chat_id for t in todo if t.model_version == version]
        preds.update({cid: (p, version) for cid, p in store.prediction_for(ids, version).items()})
    payload = []
    masker, shown = ctx.settings.masker, ctx.settings.shown_meta.split(",")
    for t in todo:
        chat = chats[t.chat_id]
        pred = None
        if t.chat_id in preds:
            p, version = preds[t.chat_id]
            confidence = max(p.p_negative, p.p_neutral, p.p_positive)
            pred = TaskPrediction(
                label=p.label, score=float(confidence), model_version=f"v{version}"
            )
        # people see masked text, whatever the store keeps (masking twice changes nothing)
        text = masker.mask(chat.text)
        line = meta(t, chat) if meta else _meta_line(chat.meta, shown, masker)
        payload.append(TaskIn(chat_id=chat.source_id, text=text, meta=line, prediction=pred))
    if payload:
        ids = client.import_tasks(project, payload)
        imported = {t.chat_id: tid for t, tid in zip(todo, ids, strict=True)}
        store.mark_pushed(project, imported)
        _ask_several(ctx, {t.chat_id: t.overlap for t in todo}, imported)
    return len(payload)


def _meta_line(meta: dict[str, Any], shown: list[str], masker: Masker) -> str:
    """The metadata annotators see: the columns SENTILOOP_SHOWN_META names, masked."""
    parts = [f"{k}: {masker.mask(str(meta[k]))}" for k in shown if meta.get(k) not in (None, "")]
    return " · ".join(parts)[:300]


# -- pull -----------------------------------------------------------------------------------


def pull(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Bring new and changed annotations into the store, from where the last pull stopped,
    and notice tasks deleted in Label Studio (their chats may be asked again); then the
    consensus of what came in, and the reviewers' answers of the review project."""
    from orchestrator import review

    client, project, instance = label_studio(ctx)
    counts = pull_project(ctx, client, project, instance)
    agreed = settle(ctx, instance)
    if agreed["consensus"]:
        counts.update({k: v for k, v in agreed.items() if v})
    reviewed = review.pull_reviews(ctx, client)
    if reviewed:
        counts["review"] = reviewed
    return counts


def pull_project(
    ctx: Context, client: LabelStudioClient, project: int, instance: str
) -> dict[str, Any]:
    """One project's new and changed annotations, and its tasks deleted in Label Studio."""
    store = ctx.store
    cursor_name = f"annotations:{instance}"
    cursor = store.get_cursor(cursor_name)
    # re-read a margin before the cursor: an annotation committed late is not missed, and
    # the upsert by annotation id makes the overlap free of double counting
    since = cursor - PULL_OVERLAP if cursor else None
    items = client.annotations_since(project, since)
    # one listing of the project's tasks serves both the adoption of tasks a crashed push
    # imported (their answers come now) and noticing deleted ones (recorded before listing)
    recorded = store.in_label_studio(project, instance)
    listing = client.tasks_by_chat_id(project)
    _adopt_imported(ctx, project, instance, listing)
    by_task = store.task_chat_map(project, instance)
    # annotators are kept by pseudonymous id, never by their e-mail address
    key = store.pseudonym_key(ctx.settings.configured_pseudonym_key) if items else b""
    rows, unknown = [], 0
    for a in items:
        chat_id = by_task.get(a.task_id)
        if chat_id is None:  # not a task of ours (imported by hand, or by another tool)
            unknown += 1
            continue
        rows.append(
            AnnotationIn(
                ls_annotation_id=a.annotation_id,
                ls_task_id=a.task_id,
                chat_id=chat_id,
                label=a.label,
                annotator=pseudonym(key, a.annotator) if a.annotator else None,
                cancelled=a.cancelled,
                created_at=a.created_at,
                updated_at=a.updated_at,
                lead_time=a.lead_time,
            )
        )
    counts = store.upsert_annotations(project, rows, instance)
    if items:
        store.set_cursor(cursor_name, max(a.updated_at for a in items))
    present = {tid for ids in listing.values() for tid in ids}
    changes = store.release_deleted(recorded, present)
    return {
        "project": project,
        "fetched": len(items),
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "unknown_task": unknown,
        "deleted_tasks": changes.deleted + changes.deleted_annotated,
    }
