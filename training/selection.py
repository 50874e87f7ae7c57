"""Active-learning query strategies over a model's (n, 3) probability matrix."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from domain import STRATEGIES
from training.errors import TrainingError
from training.strategies import NEEDS_EMBEDDINGS, as_probs, check_k, top_k, utility
from training.strategies import strategy as strategy_named

__all__ = [
    "NEEDS_EMBEDDINGS",
    "STRATEGIES",
    "cold_start",
    "duplicate_key",
    "select",
    "top_k",
    "utility",
]


def select(
    strategy: str,
    probs: npt.ArrayLike,
    k: int,
    *,
    embeddings: npt.ArrayLike | None = None,
    duplicate_keys: Sequence[str] | None = None,
    duplicate_embeddings: npt.ArrayLike | None = None,
    class_balance: bool = False,
    labelled_counts: Sequence[int] | None = None,
    prefilter: int = 5,
    duplicate_cosine: float = 0.95,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` chats to label, most informative first.

    ``strategy``: random, least_confidence, margin, entropy, diverse (the ``prefilter``
    x k smallest-margin rows clustered by k-means over ``embeddings``, one chat per
    cluster, so a batch is not k variants of one complaint), or badge (k-means++ seeding
    over gradient embeddings, Ash et al. 2020: uncertain and mutually distant chats).
    Within a batch no two chats share a ``duplicate_keys`` entry or have
    ``duplicate_embeddings`` closer than ``duplicate_cosine``: unit sentence embeddings
    from a model trained for similarity (the base model), not the fine-tuned model's
    ``embeddings``, which put up to a third of same-class chat pairs above cosine 0.95 and
    would thin out the majority class. ``class_balance`` reserves half the batch for the C
    predicted classes, so a class the model rarely predicts still reaches the annotators:
    evenly, or, given the ``labelled_counts`` per class so far, in proportion to how far
    each class is below an even share of the labels. Ties go to the lower row index; the
    result has ``min(k, n)`` distinct indices when enough distinct chats exist.
    """
    check_k(k)
    arr = as_probs(probs)
    n = arr.shape[0]
    emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    if emb is not None and emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for {n} probability rows")
    dup = None if duplicate_embeddings is None else np.asarray(duplicate_embeddings, np.float32)
    if dup is not None and dup.shape[0] != n:
        raise TrainingError(f"{dup.shape[0]} duplicate embeddings for {n} probability rows")
    if duplicate_keys is not None and len(duplicate_keys) != n:
        raise TrainingError(f"{len(duplicate_keys)} duplicate keys for {n} probability rows")
    if labelled_counts is not None and len(labelled_counts) != arr.shape[1]:
        raise TrainingError(f"{len(labelled_counts)} labelled counts for {arr.shape[1]} classes")
    chooser = strategy_named(strategy)
    if k == 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    quotas = _quotas(k, arr.shape[1], class_balance, labelled_counts)
    # reserved places need each class's best, which may all lie beyond the first margin
    limit = n if any(quotas) else min(n, 4 * k + 64)
    options = {"prefilter": prefilter, "seed": seed}
    ranked = chooser.rank(arr, emb, k, limit=limit, **options)
    picked = _fill(ranked, k, arr, dup, duplicate_keys, quotas, duplicate_cosine)
    if len(picked) == min(k, n) or len(ranked) >= n or len(ranked) < limit:
        return picked
    ranked = chooser.rank(arr, emb, k, limit=n, **options)  # near duplicates used the margin up
    return _fill(ranked, k, arr, dup, duplicate_keys, quotas, duplicate_cosine)


def _quotas(
    k: int, classes: int, class_balance: bool, labelled_counts: Sequence[int] | None
) -> list[int]:
    """Places in a batch of k reserved per predicted class: half the batch, split evenly
    or by each class's shortfall from an even share of labels (largest remainder)."""
    if not class_balance:
        return [0] * classes
    if labelled_counts is None:
        return [-(-k // (2 * classes))] * classes
    counts = np.asarray(labelled_counts, dtype=np.float64)
    if (counts < 0).any():
        raise TrainingError(f"labelled counts must be non-negative, got {list(labelled_counts)}")
    reserve = k // 2
    deficit = np.maximum(0.0, (counts.sum() + k) / classes - counts)
    if reserve == 0 or deficit.sum() == 0:
        return [0] * classes
    exact = reserve * deficit / deficit.sum()
    quotas = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - quotas), kind="stable")[: reserve - int(quotas.sum())]:
        quotas[c] += 1
    return [int(q) for q in quotas]


def _fill(
    ranked: npt.NDArray[np.int64],
    k: int,
    probs: npt.NDArray[np.float64],
    emb: npt.NDArray[np.float32] | None,
    keys: Sequence[str] | None,
    quotas: Sequence[int],
    max_cosine: float,
) -> npt.NDArray[np.int64]:
    """Take rows in rank order, skipping near-duplicates of rows already taken, after
    first filling each predicted class's reserved places (``quotas``)."""
    predicted = probs.argmax(axis=1)
    chosen: list[int] = []
    seen_keys: set[str] = set()
    vectors: list[npt.NDArray[np.float32]] = []

    def take(i: int) -> bool:
        if keys is not None and keys[i] in seen_keys:
            return False
        if emb is not None and vectors and float(np.max(np.stack(vectors) @ emb[i])) >= max_cosine:
            return False
        chosen.append(i)
        if keys is not None:
            seen_keys.add(keys[i])
        if emb is not None:
            vectors.append(emb[i])
        return True

    for c, quota in enumerate(quotas):
        got = 0
        for i in ranked[predicted[ranked] == c]:
            if got >= quota or len(chosen) >= k:
                break
            got += take(int(i))
    taken = set(chosen)
    for i in ranked:
        if len(chosen) >= k:
            break
        if int(i) not in taken and take(int(i)):
            taken.add(int(i))
    rank = {int(i): r for r, i in enumerate(ranked)}
    return np.asarray(sorted(chosen, key=rank.__getitem__), dtype=np.int64)


def cold_start(
    n: int,
    k: int,
    *,
    embeddings: npt.ArrayLike | None = None,
    class_embeddings: npt.ArrayLike | None = None,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """First batch to label before any model exists: ``min(k, n)`` distinct indices.

    With ``embeddings`` (n rows, e.g. from the base model) the batch covers the pool: the
    chat nearest each of k k-means centroids, so the first labels span the kinds of chats
    there are; without them, a random sample. With ``class_embeddings`` too (a row per
    class: the same model's embedding of a short description of each label) it is also
    class-balanced, zero-shot: a random first batch of skewed chats holds few of the rare
    classes, and the first rounds decide most of the learning curve. Each class gets an
    equal share, covering (k-means) the (up to) 4x share of chats most typical of it: those
    whose similarity to its description most exceeds their similarity to any other.
    """
    check_k(k)
    if n < 0:
        raise TrainingError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    if embeddings is None or k >= n:
        return rng.choice(n, size=min(k, n), replace=False).astype(np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for a pool of {n}")
    if class_embeddings is None:
        return _coverage(emb, np.arange(n), k, seed)
    classes = np.asarray(class_embeddings, dtype=np.float32)
    if classes.ndim != 2 or classes.shape[1] != emb.shape[1] or len(classes) < 2:
        raise TrainingError(
            f"class embeddings of shape {classes.shape} for embeddings of width {emb.shape[1]}"
        )
    sims = emb @ classes.T
    picked: list[int] = []
    taken: set[int] = set()
    quotas = [k // len(classes) + (c < k % len(classes)) for c in range(len(classes))]
    for c, quota in enumerate(quotas):
        # how much more like this label's description than any other's: ranking by it
        # ignores how close a description is to chats in general
        margin = sims[:, c] - np.delete(sims, c, axis=1).max(axis=1)
        ranked = [int(i) for i in np.argsort(-margin, kind="stable") if int(i) not in taken]
        closest = [i for i in ranked[: 4 * quota] if margin[i] > 0]  # nearer it than any other
        typical = np.asarray(closest if len(closest) >= quota else ranked[:quota], dtype=np.int64)
        chosen = [int(i) for i in _coverage(emb, typical, quota, seed)]
        picked += chosen
        taken.update(chosen)
    return np.asarray(picked, dtype=np.int64)


def _coverage(
    emb: npt.NDArray[np.float32], among: npt.NDArray[np.int64], k: int, seed: int
) -> npt.NDArray[np.int64]:
    """``k`` of the indices ``among``: the one nearest each of k k-means centroids of their
    embeddings."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= len(among):
        return np.asarray(among, dtype=np.int64)
    from sklearn.cluster import KMeans

    sub = emb[among]
    centers = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit(sub)
    centers_ = centers.cluster_centers_
    dist = (centers_**2).sum(1)[None, :] - 2 * (sub @ centers_.T)  # squared distance - |e|^2
    picked: list[int] = []
    used: set[int] = set()
    for c in range(k):
        for i in np.argsort(dist[:, c], kind="stable"):
            if int(i) not in used:
                picked.append(int(among[i]))
                used.add(int(i))
                break
    return np.asarray(picked, dtype=np.int64)


_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def duplicate_key(text: str) -> str:
    """A text with case, @mentions, links, digits and punctuation removed: retweets and
    templated complaints that differ only there get the same key."""
    t = _URL.sub(" ", text.lower())
    t = _MENTION.sub(" ", t)
    t = re.sub(r"\d+", "0", t)
    return _NON_WORD.sub(" ", t).strip()
