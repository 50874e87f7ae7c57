"""The loop's steps. Each re-derives its work from the store and holds a lease while it runs,
so a lost, repeated or concurrent Celery message changes nothing."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from labeling import LabelStudioClient, TaskIn
from labeling import PredictionIn as TaskPrediction
from orchestrator import inbox, registry
from orchestrator.context import Context
from orchestrator.errors import LabelStudioMismatch, StepError
from store import (
    AnnotationIn,
    DatabaseUnavailable,
    IngestError,
    IngestReport,
    LabelTask,
    LeaseBusy,
    LeaseLost,
    ModelVersion,
    PredictionIn,
    fenced,
    utcnow,
)
from store import ingest_file as store_ingest_file

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""(stage, done, total): called as long steps advance."""

STEPS = ("ingest", "score", "push", "pull", "retrain")
#: Columns that would tell annotators the answer are never shown in Label Studio.
HIDDEN_META = frozenset({"label", "label_confidence", "negative_reason", "sentiment"})
PULL_OVERLAP = timedelta(seconds=30)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def new_cycle_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_step(
    ctx: Context,
    step: str,
    fn: Callable[[Context, Progress], dict[str, Any]],
    *,
    cycle_id: str | None = None,
    trigger: str = "manual",
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Run one step under its lease and record it. A step this cycle already finished is
    skipped, and so is one that another worker is running right now.

    The lease is taken before "already done?" is asked and the run is recorded as finished
    before it is released, so a repeated message can never slip in between; every write the
    step makes, its own record included, is fenced by the lease (a run whose lease was taken
    over writes nothing more and is recorded as ``lost``)."""
    cycle_id = cycle_id or new_cycle_id()
    store = ctx.store
    store.reap_dead_runs()
    started = time.monotonic()
    try:
        with store.lease(step) as lease:
            if store.step_done(cycle_id, step):
                return {"status": "skipped", "reason": "already done in this cycle"}
            run_id = store.start_run(cycle_id, step, trigger, owner=lease.owner)
            try:
                with fenced(lease):
                    counts = fn(ctx, progress)
                    counts["seconds"] = round(time.monotonic() - started, 2)
                    status = "skipped" if "skipped" in counts else "ok"
                    store.finish_run(run_id, status, counts)
            except LeaseLost as exc:
                store.finish_run(run_id, "lost", {}, error=str(exc))
                raise
            except Exception as exc:
                store.finish_run(run_id, "failed", {}, error=f"{type(exc).__name__}: {exc}")
                raise
    except LeaseBusy as exc:
        run_id = store.start_run(cycle_id, step, trigger)
        store.finish_run(run_id, "skipped", {"reason": str(exc)})
        return {"status": "skipped", "reason": str(exc)}
    return {"status": status, **counts}


# -- ingest ---------------------------------------------------------------------------------


def ingest_file(ctx: Context, path: Path) -> IngestReport:
    """Store every good row of the file and report every bad one with its reason."""
    return store_ingest_file(ctx.store, path)


def ingest_inbox(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Ingest the complete files in ``home/inbox`` (see :func:`inbox.ready_files`). A file
    ingested is moved to ``done/``, one that cannot be read at all to ``failed/``, each with
    a report beside it when rows were rejected; neither overwrites anything. A transient
    error (the database busy or unreachable) leaves the file where it is for the next tick
    and fails the step, so the failure shows in ``sentiloop status``."""
    inbox_dir = ctx.settings.inbox_dir
    files = inbox.ready_files(inbox_dir, ctx.settings.inbox_settle_seconds)
    totals = {"files": 0, "failed": 0, "inserted": 0, "updated": 0, "rejected": 0}
    left: list[str] = []
    for i, path in enumerate(files):
        try:
            report = ingest_file(ctx, path)
        except IngestError as exc:  # the file as a whole is unusable: no retry will help
            logger.error("ingest of %s failed: %s", path.name, exc)
            inbox.file_away(path, inbox_dir / "failed", str(exc))
            totals["failed"] += 1
            continue
        except DatabaseUnavailable:
            raise  # the next files would fail too; Celery retries the step
        except Exception as exc:  # unexpected: keep the file, say so, carry on with the rest
            logger.exception("ingest of %s failed; the file stays in the inbox", path.name)
            left.append(f"{path.name}: {type(exc).__name__}")
            continue
        if report.stored == 0:
            inbox.file_away(path, inbox_dir / "failed", "no valid row", report)
            totals["failed"] += 1
        else:
            inbox.file_away(path, inbox_dir / "done", None, report)
            totals["files"] += 1
        totals["inserted"] += report.inserted
        totals["updated"] += report.updated
        totals["rejected"] += report.n_rejected
        progress("ingest", i + 1, len(files))
    if left:
        raise StepError(f"{len(left)} inbox files left for the next tick: " + "; ".join(left))
    return totals


# -- score ----------------------------------------------------------------------------------


def score(ctx: Context, progress: Progress, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Score the unlabelled chats that the production version has not scored yet, streamed
    from the store a chunk at a time; ``shard=(index, count)`` takes one shard of them."""
    store, settings = ctx.store, ctx.settings
    production = store.production()
    if production is None:
        return {"skipped": "no production model yet"}
    version = production.number
    shard_info = {"shard": f"{shard[0]}/{shard[1]}"} if shard else {}
    total = store.count_unscored(version, shard)
    batches: Iterable[list[tuple[int, str]]]
    if settings.score_sample and total > settings.score_sample // (shard[1] if shard else 1):
        sampled = _sampled(ctx, version, shard)
        batches, total = sampled, sum(len(b) for b in sampled)
    else:
        batches = store.iter_unscored(version, settings.score_chunk, shard)
    scored = written = 0
    for batch in batches:

        def report(done: int, _total: int, offset: int = scored) -> None:
            progress("score", offset + done, total)

        written += _write_scores(ctx, production, batch, report)
        scored += len(batch)
    if shard is None:
        extra = score_stop_set(ctx, production)
        scored, written = scored + extra["scored"], written + extra["written"]
    return {"version": version, "scored": scored, "written": written, **shard_info}


def score_stop_set(ctx: Context, production: ModelVersion | None = None) -> dict[str, int]:
    """Every production version scores the stopping criterion's fixed set, labelled chats
    included, so successive versions can be compared on the same chats. Run after the
    pool (or all its shards): by then only the labelled ones are left to score."""
    store = ctx.store
    production = production or store.production()
    if production is None:
        return {"scored": 0, "written": 0}
    ids = store.stop_set(ctx.settings.stop_set_size)
    missing = [c for c in ids if c not in store.prediction_for(ids, production.number)]
    chats = store.chats_by_id(missing)
    pairs = [(c, chats[c].text) for c in missing if c in chats]
    written = _write_scores(ctx, production, pairs) if pairs else 0
    return {"scored": len(pairs), "written": written}


def _write_scores(
    ctx: Context,
    production: ModelVersion,
    pairs: list[tuple[int, str]],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Score (chat id, text) pairs with the production model (calibrated) and store them."""
    from training import apply_temperature, predicted_labels, sentiment_score, uncertainty

    scorer = ctx.scorer(production)  # cached: loaded once, and only if there is work
    raw = scorer.predict_proba([text for _, text in pairs], progress=progress)
    probs = apply_temperature(raw, production.temperature)
    labels, scores, unc = predicted_labels(probs), sentiment_score(probs), uncertainty(probs)
    rows = [
        PredictionIn(
            cid, (float(p[0]), float(p[1]), float(p[2])), labels[i], float(scores[i]), float(unc[i])
        )
        for i, ((cid, _), p) in enumerate(zip(pairs, probs, strict=True))
    ]
    return ctx.store.add_predictions(production.number, rows)


def _sampled(
    ctx: Context, version: int, shard: tuple[int, int] | None
) -> list[list[tuple[int, str]]]:
    """At most ``score_sample`` chats this cycle (split over the shards), drawn at random:
    a fixed seed per version, so a repeated run draws from what is still missing."""
    settings, store = ctx.settings, ctx.store
    count = shard[1] if shard else 1
    size = -(-settings.score_sample // count)
    ids = [cid for batch in store.iter_unscored(version, 50_000, shard) for cid, _ in batch]
    rng = np.random.default_rng([settings.seed, version, shard[0] if shard else 0, len(ids)])
    chosen = sorted(int(i) for i in rng.choice(ids, size=min(size, len(ids)), replace=False))
    chats = store.chats_by_id(chosen)
    pairs = [(cid, chats[cid].text) for cid in chosen if cid in chats]
    step = settings.score_chunk
    return [pairs[i : i + step] for i in range(0, len(pairs), step)]


def score_shard(ctx: Context, progress: Progress, index: int, count: int) -> dict[str, Any]:
    """One shard of the score step, for a Celery group spread over several workers."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return score(ctx, progress, shard=(index, count))


# -- select and push ------------------------------------------------------------------------


def label_studio(ctx: Context) -> tuple[LabelStudioClient, int, str]:
    """The client, the project and its identity, checked against the Label Studio this
    store's tasks live in: a Label Studio that was reset or replaced has other task and
    annotation ids, and syncing with it would map them onto the wrong chats."""
    settings, store = ctx.settings, ctx.store
    client = ctx.labeling()
    project = client.ensure_project(settings.project_title, "Chats chosen by sentiloop")
    identity = client.project_identity(project)
    recorded = store.label_studio_identity()
    if recorded is not None and recorded.get("identity") != identity:
        raise LabelStudioMismatch(
            f"Label Studio at {settings.ls_url} holds {settings.project_title!r} as {identity}, "
            f"but this store's tasks were made in {recorded.get('identity')} at "
            f"{recorded.get('url')}: nothing was synced. If Label Studio was reset or replaced, "
            "`sentiloop labelstudio resync` re-creates the unanswered tasks there"
        )
    if recorded is None or recorded.get("url") != settings.ls_url:
        adopted = store.adopt_label_studio(identity, settings.ls_url)
        if adopted:
            logger.info("%d tasks and annotations recorded as from %s", adopted, identity)
    return client, project, identity


def push(
    ctx: Context, progress: Progress, limit: int | None = None, cycle_id: str | None = None
) -> dict[str, Any]:
    """Pick the most informative chats and create their Label Studio tasks, never twice.
    ``limit`` overrides the batch size (the demo's seed batch). Skipped tasks that are due
    are asked again first. With SENTILOOP_STOP_WHEN_STABLE, nothing new is pushed once the
    stopping criterion fires."""
    from orchestrator import selection

    settings, store = ctx.settings, ctx.store
    _, project, instance = label_studio(ctx)
    requeued = _requeue_skipped(ctx, project)
    reconciled = _push_pending(ctx, project, instance)
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
    store.reserve_tasks(
        project,
        batch.chat_ids,
        strategy=batch.selection.strategy,
        model_version=batch.selection.model_version,
        selection_scores=batch.scores,
        selection=batch.selection,
        instance=instance,
    )
    pushed = _push_pending(ctx, project, instance)
    return {
        **counts,
        "strategy": batch.selection.strategy,
        "selected": len(batch.chat_ids),
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
    project = client.ensure_project(settings.project_title, "Chats chosen by sentiloop")
    identity = client.project_identity(project)
    recorded = store.label_studio_identity()
    moved = store.resync(project, identity, settings.ls_url)
    pushed = _push_pending(ctx, project, identity)
    return {
        "project": project,
        "from": (recorded or {}).get("identity"),
        "to": identity,
        "recreated": moved,
        "pushed": pushed,
    }


def _adopt_imported(ctx: Context, project: int, instance: str) -> list[LabelTask]:
    """Pending tasks that a crashed run already imported are recorded as pushed (a task of
    the chat that this store never recorded: known ones are history). Returns the pending
    tasks still to import."""
    store = ctx.store
    pending = store.pending_tasks(project)
    if not pending:
        return []
    chats = store.chats_by_id([t.chat_id for t in pending])
    known = store.known_ls_task_ids(instance)
    existing = {
        source: [tid for tid in ids if tid not in known]
        for source, ids in ctx.labeling().tasks_by_chat_id(project).items()
    }
    adopted = {
        t.chat_id: existing[chats[t.chat_id].source_id][0]
        for t in pending
        if existing.get(chats[t.chat_id].source_id)
    }
    if adopted:
        logger.info("adopting %d tasks imported by an interrupted run", len(adopted))
        store.mark_pushed(project, adopted)
    return [t for t in pending if t.chat_id not in adopted]


def _push_pending(ctx: Context, project: int, instance: str) -> int:
    """Import every pending task that is not in Label Studio yet."""
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
    for t in todo:
        chat = chats[t.chat_id]
        pred = None
        if t.chat_id in preds:
            p, version = preds[t.chat_id]
            confidence = max(p.p_negative, p.p_neutral, p.p_positive)
            pred = TaskPrediction(
                label=p.label, score=float(confidence), model_version=f"v{version}"
            )
        payload.append(
            TaskIn(
                chat_id=chat.source_id, text=chat.text, meta=_meta_line(chat.meta), prediction=pred
            )
        )
    if payload:
        ids = client.import_tasks(project, payload)
        store.mark_pushed(project, {t.chat_id: tid for t, tid in zip(todo, ids, strict=True)})
    return len(payload)


def _meta_line(meta: dict[str, Any]) -> str:
    shown = [f"{k}: {v}" for k, v in meta.items() if k not in HIDDEN_META]
    return " · ".join(shown)[:300]


# -- pull -----------------------------------------------------------------------------------


def pull(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Bring new and changed annotations into the store, from where the last pull stopped,
    and notice tasks deleted in Label Studio (their chats may be asked again)."""
    store = ctx.store
    client, project, instance = label_studio(ctx)
    cursor_name = f"annotations:{instance}"
    cursor = store.get_cursor(cursor_name)
    # re-read a margin before the cursor: an annotation committed late is not missed, and
    # the upsert by annotation id makes the overlap free of double counting
    since = cursor - PULL_OVERLAP if cursor else None
    items = client.annotations_since(project, since)
    _adopt_imported(ctx, project, instance)  # answers to a task a crashed push imported
    by_task = store.task_chat_map(project, instance)
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
                annotator=a.annotator,
                cancelled=a.cancelled,
                created_at=a.created_at,
                updated_at=a.updated_at,
            )
        )
    counts = store.upsert_annotations(project, rows, instance)
    if items:
        store.set_cursor(cursor_name, max(a.updated_at for a in items))
    present = {tid for ids in client.tasks_by_chat_id(project).values() for tid in ids}
    changes = store.release_deleted(project, instance, present)
    return {
        "project": project,
        "fetched": len(items),
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "unknown_task": unknown,
        "deleted_tasks": changes.deleted + changes.deleted_annotated,
    }


STEP_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest_inbox,
    "score": score,
    "push": push,
    "pull": pull,
    "retrain": registry.retrain,
}
