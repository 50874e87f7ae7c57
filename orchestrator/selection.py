"""Choosing the next batch for annotators, and saying when more labels stop helping.

Wires the store (candidates, texts, stored probabilities) to training's strategies: the
candidates worth a closer look are embedded with the model that scored them (for the
diverse and badge strategies) and with the base model (for the near-duplicate check: it
was trained for sentence similarity, a fine-tuned classifier maps whole classes to near
one point), so chats are compared by meaning, not by id."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from domain import LABELS
from orchestrator.context import Context
from store import ModelVersion, SelectionRound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    chat_ids: list[int]
    scores: list[float | None]  # the strategy's uncertainty of each chosen chat
    selection: SelectionRound


def choose(ctx: Context, project: int, room: int, cycle_id: str | None = None) -> Batch:
    """The next ``room`` chats for ``project``: by the cold start before any model exists,
    then by the configured strategy over the production model's predictions."""
    settings, store = ctx.settings, ctx.store
    production = store.production()
    options = {
        "class_balance": settings.class_balance,
        "diverse_prefilter": settings.diverse_prefilter,
        "duplicate_cosine": settings.duplicate_cosine,
    }
    if production is None:
        return _cold_start(ctx, project, room, options, cycle_id)
    from orchestrator.distill import selecting_version
    from training import NEEDS_EMBEDDINGS, duplicate_key, select, utility

    selector = selecting_version(ctx, production)  # production, or its teacher
    cands = store.candidates(selector.number, project)
    strategy = settings.strategy
    balance = settings.class_balance != "off"
    counts = _label_counts(ctx) if settings.class_balance == "labels" else None
    if counts is not None:
        options["labelled_counts"] = counts
    shortlist = _shortlist(
        cands.probs,
        strategy,
        room,
        settings.diverse_prefilter,
        balance,
        settings.seed + production.number,
    )
    ids = [int(cands.chat_ids[i]) for i in shortlist]
    chats = store.chats_by_id(ids)
    texts = [chats[c].text for c in ids]
    probs = cands.probs[shortlist]
    embeddings = duplicates = None
    if texts:
        if strategy in NEEDS_EMBEDDINGS:
            embeddings = ctx.scorer(selector).predict_with_embeddings(texts)[1]
        duplicates = ctx.base_scorer().predict_with_embeddings(texts)[1]
    order = select(
        strategy,
        probs,
        room,
        embeddings=embeddings,
        duplicate_keys=[duplicate_key(t) for t in texts],
        duplicate_embeddings=duplicates,
        class_balance=balance,
        labelled_counts=counts,
        prefilter=settings.diverse_prefilter,
        duplicate_cosine=settings.duplicate_cosine,
        seed=settings.seed + production.number,
    )
    unsure = utility("least_confidence", probs) if len(probs) else np.zeros(0)
    selection = SelectionRound(
        project_id=project,
        cycle_id=cycle_id,
        model_version=selector.number,
        strategy=strategy,
        options=options,
        candidates=len(cands),
        requested=room,
        stopping=stopping_signal(ctx, production),
    )
    logger.info(
        "%s chose %d of %d candidates (%d embedded) with v%d",
        strategy,
        len(order),
        len(cands),
        len(ids),
        selector.number,
    )
    return Batch([ids[i] for i in order], [float(unsure[i]) for i in order], selection)


def _label_counts(ctx: Context) -> list[int]:
    """Labels the next model will train on, per class in the model's label order."""
    from training import LABELS

    counts = Counter(e.label for e in ctx.store.training_examples())
    return [counts.get(label, 0) for label in LABELS]


def _shortlist(
    probs: npt.NDArray[np.float64],
    strategy: str,
    room: int,
    prefilter: int,
    class_balance: bool,
    seed: int,
) -> npt.NDArray[np.int64]:
    """The candidates worth embedding: the most uncertain few times the batch (random:
    a random sample that size), plus, for class balance, the most uncertain of each
    predicted class. Everything else could not be chosen anyway."""
    from training import top_k, utility

    n = len(probs)
    size = min(n, max(prefilter * room, 4 * room + 64))
    if strategy == "random":
        base = np.random.default_rng(seed).permutation(n)[:size].astype(np.int64)
        util: npt.NDArray[np.float64] = np.zeros(n)
    else:
        util = utility("margin" if strategy == "diverse" else strategy, probs)
        base = top_k(util, size)
    parts = [base]
    if class_balance and n:
        predicted = probs.argmax(axis=1)
        for c in range(probs.shape[1]):
            members = np.flatnonzero(predicted == c)
            parts.append(members[top_k(util[members], 2 * room)])
    merged, first = np.unique(np.concatenate(parts), return_index=True)
    return np.asarray(merged[np.argsort(first, kind="stable")], dtype=np.int64)


def _cold_start(
    ctx: Context, project: int, room: int, options: dict[str, Any], cycle_id: str | None
) -> Batch:
    """Before any model, by ``SENTILOOP_COLD_START``: embed a sample of the pool with the
    base model and take a class-balanced batch by similarity to the label descriptions
    (zero-shot) or the chat nearest each of ``room`` k-means centroids (coverage); or a
    random sample."""
    from training import cold_start

    settings, store = ctx.settings, ctx.store
    pool = store.unlabelled_chat_ids(project)
    rng = np.random.default_rng(settings.seed)
    if len(pool) > settings.cold_start_sample:
        pool = sorted(int(i) for i in rng.choice(pool, settings.cold_start_sample, replace=False))
    embeddings = class_embeddings = None
    if len(pool) > room and settings.cold_start != "random":
        chats = store.chats_by_id(pool)
        pool = [c for c in pool if c in chats]
        scorer = ctx.base_scorer()
        embeddings = scorer.predict_with_embeddings([chats[c].text for c in pool])[1]
        if settings.cold_start == "zero-shot":
            descriptions = [settings.label_descriptions[c] for c in LABELS]
            class_embeddings = scorer.predict_with_embeddings(descriptions)[1]
    picked = cold_start(
        len(pool),
        room,
        embeddings=embeddings,
        class_embeddings=class_embeddings,
        seed=settings.seed,
    )
    selection = SelectionRound(
        project_id=project,
        cycle_id=cycle_id,
        model_version=None,
        strategy="cold_start",
        options={**options, "sample": len(pool), "cold_start": settings.cold_start},
        candidates=len(pool),
        requested=room,
        stopping={},
    )
    return Batch([pool[i] for i in picked], [None] * len(picked), selection)


def stopping_signal(ctx: Context, production: ModelVersion | None = None) -> dict[str, Any]:
    """Kappa between each pair of successive production versions on the stop set, for
    the last ``stop_window`` pairs, and whether the criterion fires."""
    from training import LABELS, cohen_kappa, stabilised

    settings, store = ctx.settings, ctx.store
    production = production or store.production()
    result: dict[str, Any] = {
        "threshold": settings.stop_kappa,
        "window": settings.stop_window,
        "pairs": [],
        "fired": False,
    }
    if production is None:
        return result
    promoted = [
        v.number
        for v in store.versions()
        if v.promoted_at is not None and v.number <= production.number
    ]
    chain = promoted[-(settings.stop_window + 1) :]
    stop_ids = store.stop_set(settings.stop_set_size)
    preds = {v: store.prediction_for(stop_ids, v) for v in chain}
    kappas = []
    for old, new in itertools.pairwise(chain):
        common = sorted(set(preds[old]) & set(preds[new]))
        if len(common) < max(10, len(stop_ids) // 2):
            continue  # one of them did not score the stop set (e.g. before an upgrade)
        a = [LABELS.index(preds[old][c].label) for c in common]
        b = [LABELS.index(preds[new][c].label) for c in common]
        kappa = round(cohen_kappa(a, b), 4)
        kappas.append(kappa)
        result["pairs"].append({"from": old, "to": new, "kappa": kappa, "n": len(common)})
    result["fired"] = stabilised(kappas, settings.stop_kappa, settings.stop_window)
    return result


def stopping_text(signal: dict[str, Any], enforced: bool) -> str:
    """The stopping criterion in one line, e.g. for ``status`` and the demo."""
    pairs = signal.get("pairs") or []
    if not signal or not pairs:
        return "no two versions to compare yet"
    kappas = ", ".join(f"v{p['from']}->v{p['to']} {p['kappa']:.3f}" for p in pairs)
    need = f"needs >= {signal['threshold']} over {signal['window']} successive versions"
    if signal.get("fired"):
        action = "annotators get no new work" if enforced else "more labels may not help"
        return f"FIRED: predictions are stable (kappa {kappas}); {action}"
    return f"not yet: kappa {kappas} ({need})"
