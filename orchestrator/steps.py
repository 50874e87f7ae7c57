"""The loop's steps. Each re-derives its work from the store and holds a lease while it runs,
so a lost, repeated or concurrent Celery message changes nothing."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from labeling import PredictionIn as TaskPrediction
from labeling import TaskIn
from orchestrator import registry
from orchestrator.context import Context
from store import AnnotationIn, LeaseBusy, ModelVersion, PredictionIn, parse_file

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
    skipped, and so is one that another worker is running right now."""
    cycle_id = cycle_id or new_cycle_id()
    store = ctx.store
    if store.step_done(cycle_id, step):
        return {"status": "skipped", "reason": "already done in this cycle"}
    run_id = store.start_run(cycle_id, step, trigger)
    started = time.monotonic()
    try:
        with store.lease(step):
            counts = fn(ctx, progress)
    except LeaseBusy as exc:
        store.finish_run(run_id, "skipped", {"reason": str(exc)})
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:
        store.finish_run(run_id, "failed", {}, error=f"{type(exc).__name__}: {exc}")
        raise
    counts["seconds"] = round(time.monotonic() - started, 2)
    status = "skipped" if "skipped" in counts else "ok"
    store.finish_run(run_id, "ok" if status == "ok" else "skipped", counts)
    return {"status": status, **counts}


# -- ingest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestReport:
    path: str
    inserted: int
    updated: int
    unchanged: int
    rejected: list[tuple[int, str]]
    long_texts: int
    repeated: int  # rows whose chat id appeared earlier in the same file (the last row wins)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": len(self.rejected),
            "long_texts": self.long_texts,
            "repeated": self.repeated,
        }


def ingest_file(ctx: Context, path: Path) -> IngestReport:
    """Store every good row of the file and report every bad one with its reason."""
    parsed = parse_file(path)
    counts = ctx.store.add_chats(parsed.chats)
    for err in parsed.errors:
        logger.warning("%s: row %d rejected: %s", path.name, err.row, err.reason)
    return IngestReport(
        str(path),
        counts.inserted,
        counts.updated,
        counts.unchanged,
        [(e.row, e.reason) for e in parsed.errors],
        parsed.long_texts,
        len(parsed.chats) - len({c.source_id for c in parsed.chats}),
    )


def ingest_inbox(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Ingest files dropped into ``home/inbox``; each is moved to ``done/`` or ``failed/``."""
    inbox = ctx.settings.inbox_dir
    files = sorted(p for p in inbox.glob("*") if p.suffix.lower() in (".csv", ".jsonl", ".ndjson"))
    totals = {"files": 0, "inserted": 0, "updated": 0, "rejected": 0}
    for i, path in enumerate(files):
        try:
            report = ingest_file(ctx, path)
        except Exception as exc:
            logger.error("ingest of %s failed: %s", path.name, exc)
            _move(path, inbox / "failed")
            continue
        _move(path, inbox / "done")
        totals["files"] += 1
        totals["inserted"] += report.inserted
        totals["updated"] += report.updated
        totals["rejected"] += len(report.rejected)
        progress("ingest", i + 1, len(files))
    return totals


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), folder / path.name)


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


def push(
    ctx: Context, progress: Progress, limit: int | None = None, cycle_id: str | None = None
) -> dict[str, Any]:
    """Pick the most informative chats and create their Label Studio tasks, never twice.
    ``limit`` overrides the batch size (the demo's seed batch). With
    SENTILOOP_STOP_WHEN_STABLE, nothing new is pushed once the stopping criterion fires."""
    from orchestrator import selection

    settings, store = ctx.settings, ctx.store
    client = ctx.labeling()
    project = client.ensure_project(settings.project_title, "Chats chosen by sentiloop")
    reconciled = _push_pending(ctx, project)
    open_tasks = len(store.tasks(project, states=["pushed"]))
    room = min(limit or settings.batch_size, settings.max_open_tasks - open_tasks)
    if room <= 0:
        return {"project": project, "reconciled": reconciled, "skipped": f"{open_tasks} open"}
    if settings.stop_when_stable:
        signal = selection.stopping_signal(ctx)
        if signal["fired"]:
            return {
                "project": project,
                "reconciled": reconciled,
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
    )
    pushed = _push_pending(ctx, project)
    return {
        "project": project,
        "strategy": batch.selection.strategy,
        "selected": len(batch.chat_ids),
        "pushed": pushed + reconciled,
    }


def _push_pending(ctx: Context, project: int) -> int:
    """Import every pending task; first adopt tasks that a crashed run already imported."""
    store = ctx.store
    pending = store.pending_tasks(project)
    if not pending:
        return 0
    client = ctx.labeling()
    chats = store.chats_by_id([t.chat_id for t in pending])
    existing = client.tasks_by_chat_id(project)
    adopted = {
        t.chat_id: existing[chats[t.chat_id].source_id][0]
        for t in pending
        if chats[t.chat_id].source_id in existing
    }
    if adopted:
        logger.info("adopting %d tasks imported by an interrupted run", len(adopted))
        store.mark_pushed(project, adopted)
    todo = [t for t in pending if t.chat_id not in adopted]
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
    """Bring new and changed annotations into the store, from where the last pull stopped."""
    store = ctx.store
    client = ctx.labeling()
    project = client.ensure_project(ctx.settings.project_title, "Chats chosen by sentiloop")
    cursor_name = f"annotations:{ctx.settings.ls_url}:{project}"
    cursor = store.get_cursor(cursor_name)
    # re-read a margin before the cursor: an annotation committed late is not missed, and
    # the upsert by annotation id makes the overlap free of double counting
    since = cursor - PULL_OVERLAP if cursor else None
    items = client.annotations_since(project, since)
    by_task = store.task_chat_map(project)
    by_source = store.chat_ids_by_source(
        sorted({a.chat_id for a in items if a.task_id not in by_task})
    )
    rows, unknown = [], 0
    for a in items:
        chat_id = by_task.get(a.task_id) or by_source.get(a.chat_id)
        if chat_id is None:
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
    counts = store.upsert_annotations(project, rows)
    if items:
        store.set_cursor(cursor_name, max(a.updated_at for a in items))
    return {
        "project": project,
        "fetched": len(items),
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "unknown_task": unknown,
    }


STEP_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest_inbox,
    "score": score,
    "push": push,
    "pull": pull,
    "retrain": registry.retrain,
}
