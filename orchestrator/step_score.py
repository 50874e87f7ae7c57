"""The score step: the production version scores the pool, streamed from the store a page at
a time, whole or one shard of it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from orchestrator.context import Context, Progress
from store import (
    ModelVersion,
    PredictionIn,
)

logger = logging.getLogger(__name__)


# -- score ----------------------------------------------------------------------------------


def score(ctx: Context, progress: Progress, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Score the unlabelled chats that the selecting version (production, or its teacher:
    SENTILOOP_SELECT_WITH) has not scored yet, streamed from the store a chunk at a time;
    ``shard=(index, count)`` takes one shard of them."""
    from orchestrator.distill import selecting_version

    store, settings = ctx.store, ctx.settings
    production = store.production()
    if production is None:
        return {"skipped": "no production model yet"}
    selector = selecting_version(ctx, production)
    version = selector.number
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

        written += write_scores(ctx, selector, batch, report)
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
    written = write_scores(ctx, production, pairs) if pairs else 0
    return {"scored": len(pairs), "written": written}


def write_scores(
    ctx: Context,
    version: ModelVersion,
    pairs: list[tuple[int, str]],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Score (chat id, text) pairs with a version (calibrated) and store them."""
    from training import apply_temperature, predicted_labels, sentiment_score, uncertainty

    scorer = ctx.scorer(version)  # cached: loaded once, and only if there is work
    raw = scorer.predict_proba([text for _, text in pairs], progress=progress)
    probs = apply_temperature(raw, version.temperature)
    labels, scores, unc = predicted_labels(probs), sentiment_score(probs), uncertainty(probs)
    rows = [
        PredictionIn(
            cid, (float(p[0]), float(p[1]), float(p[2])), labels[i], float(scores[i]), float(unc[i])
        )
        for i, ((cid, _), p) in enumerate(zip(pairs, probs, strict=True))
    ]
    return ctx.store.add_predictions(version.number, rows)


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
