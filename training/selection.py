"""Active-learning query strategies over a model's (n, 3) probability matrix."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from training.errors import TrainingError

__all__ = ["STRATEGIES", "cold_start", "duplicate_key", "select", "top_k", "utility"]

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "diverse")
#: Strategies that need the candidates' embeddings.
NEEDS_EMBEDDINGS = frozenset({"diverse"})


def _check_k(k: int) -> None:
    if k < 0:
        raise TrainingError(f"k must be non-negative, got {k}")


def top_k(utility: npt.ArrayLike, k: int, *, largest: bool = True) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best entries of a 1-D ``utility``, best first.

    Best means largest (or smallest with ``largest=False``); ties go to the lower index,
    and NaN counts as the worst possible value. Returns ``min(k, n)`` distinct indices.
    O(n + k log k): ``argpartition`` finds the k-th best value, then only the entries at
    least that good are sorted (the top 1,000 of 1,000,000 take ~10 ms).
    """
    _check_k(k)
    arr = np.asarray(utility, dtype=np.float64)
    if arr.ndim != 1:
        raise TrainingError(f"expected a 1-D utility vector, got shape {arr.shape}")
    n = arr.shape[0]
    take = min(k, n)
    if take == 0:
        return np.zeros(0, dtype=np.int64)
    key = -arr if largest else arr.copy()  # ascending key: smaller is better
    key[np.isnan(key)] = np.inf
    if take < n:
        kth = key[np.argpartition(key, take - 1)[take - 1]]
        better = np.flatnonzero(key < kth)
        tied = np.flatnonzero(key == kth)[: take - better.size]  # lowest indices win ties
        candidates = np.concatenate((better, tied))
    else:
        candidates = np.arange(n)
    # lexsort: the last key is primary (utility), ties by index.
    order = np.lexsort((candidates, key[candidates]))
    result: npt.NDArray[np.int64] = candidates[order].astype(np.int64)
    return result


def utility(strategy: str, probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """How informative each row is under an uncertainty strategy (larger = more), from
    modAL's implementations on the probability matrix."""
    arr = _probs(probs)
    if strategy == "least_confidence":
        return np.asarray(_proba_uncertainty(arr), dtype=np.float64)
    if strategy in ("margin", "diverse"):  # small margin = unsure
        return -np.asarray(_proba_margin(arr), dtype=np.float64)
    if strategy == "entropy":
        return np.asarray(_proba_entropy(arr), dtype=np.float64)
    raise TrainingError(f"{strategy!r} has no uncertainty utility")


def _probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TrainingError(f"expected a 2-D probability matrix, got shape {arr.shape}")
    return arr


def select(
    strategy: str,
    probs: npt.ArrayLike,
    k: int,
    *,
    embeddings: npt.ArrayLike | None = None,
    duplicate_keys: Sequence[str] | None = None,
    class_balance: bool = False,
    prefilter: int = 5,
    duplicate_cosine: float = 0.95,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` chats to label, most informative first.

    ``strategy``: random, least_confidence, margin, entropy, or diverse (the ``prefilter``
    x k smallest-margin rows clustered by k-means over ``embeddings``, one chat per
    cluster, so a batch is not k variants of one complaint). Within a batch no two chats
    share a ``duplicate_keys`` entry or have embeddings closer than ``duplicate_cosine``.
    ``class_balance`` reserves about k/(2C) places for each of the C predicted classes, so
    a class the model rarely predicts still reaches the annotators. Ties go to the lower
    row index; the result has ``min(k, n)`` distinct indices when enough distinct chats
    exist.
    """
    _check_k(k)
    arr = _probs(probs)
    n = arr.shape[0]
    emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    if emb is not None and emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for {n} probability rows")
    if duplicate_keys is not None and len(duplicate_keys) != n:
        raise TrainingError(f"{len(duplicate_keys)} duplicate keys for {n} probability rows")
    if strategy not in STRATEGIES:
        raise TrainingError(
            f"unknown query strategy {strategy!r}: the setting SENTILOOP_STRATEGY must be "
            f"one of {list(STRATEGIES)}"
        )
    if k == 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "random":
        ranked = np.random.default_rng(seed).permutation(n).astype(np.int64)
    elif strategy == "diverse":
        if emb is None:
            raise TrainingError("the diverse strategy needs embeddings of the candidates")
        ranked = _diverse(utility(strategy, arr), emb, k, prefilter, seed)
    else:
        util = utility(strategy, arr)
        # rank a margin beyond k first (top-k of a million rows is cheap, a full sort not)
        ranked = top_k(util, min(n, 4 * k + 64))
        picked = _fill(ranked, k, arr, emb, duplicate_keys, class_balance, duplicate_cosine)
        if len(picked) == min(k, n) or len(ranked) == n:
            return picked
        ranked = top_k(util, n)
    return _fill(ranked, k, arr, emb, duplicate_keys, class_balance, duplicate_cosine)


def _diverse(
    util: npt.NDArray[np.float64],
    emb: npt.NDArray[np.float32],
    k: int,
    prefilter: int,
    seed: int,
) -> npt.NDArray[np.int64]:
    """The most uncertain member of each of k clusters of the most uncertain rows, ranked
    by their uncertainty; then the rest of the rows by uncertainty, as fallbacks."""
    pool = top_k(util, max(k * prefilter, k))
    clusters = min(k, len(pool))
    labels = _kmeans(emb[pool], clusters, seed)
    picks = []
    for c in range(clusters):
        members = pool[labels == c]
        if members.size:
            picks.append(members[np.argmax(util[members])])
    picks_arr = np.asarray(picks, dtype=np.int64)
    picks_arr = picks_arr[np.lexsort((picks_arr, -util[picks_arr]))]
    rest = top_k(util, len(util))
    rest = rest[~np.isin(rest, picks_arr)]
    return np.concatenate((picks_arr, rest))


def _kmeans(x: npt.NDArray[np.float32], k: int, seed: int) -> npt.NDArray[np.int64]:
    from sklearn.cluster import KMeans

    if k >= len(x):
        return np.arange(len(x), dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50)
    return np.asarray(model.fit_predict(x), dtype=np.int64)


def _fill(
    ranked: npt.NDArray[np.int64],
    k: int,
    probs: npt.NDArray[np.float64],
    emb: npt.NDArray[np.float32] | None,
    keys: Sequence[str] | None,
    class_balance: bool,
    max_cosine: float,
) -> npt.NDArray[np.int64]:
    """Take rows in rank order, skipping near-duplicates of rows already taken; with
    ``class_balance`` first fill each predicted class's reserved places."""
    predicted = probs.argmax(axis=1)
    classes = probs.shape[1]
    quota = -(-k // (2 * classes)) if class_balance else 0
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

    if quota:
        for c in range(classes):
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
    n: int, k: int, *, embeddings: npt.ArrayLike | None = None, seed: int = 0
) -> npt.NDArray[np.int64]:
    """First batch to label before any model exists: ``min(k, n)`` distinct indices.

    With ``embeddings`` (n rows, e.g. from the base model) the batch covers the pool: the
    chat nearest each of k k-means centroids, so the first labels span the kinds of chats
    there are; without them, a random sample.
    """
    _check_k(k)
    if n < 0:
        raise TrainingError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    if embeddings is None or k >= n:
        return rng.choice(n, size=min(k, n), replace=False).astype(np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for a pool of {n}")
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit(emb)
    centers = model.cluster_centers_
    dist = (centers**2).sum(1)[None, :] - 2 * (emb @ centers.T)  # squared distance - |e|^2
    picked: list[int] = []
    used: set[int] = set()
    for c in range(k):
        for i in np.argsort(dist[:, c], kind="stable"):
            if int(i) not in used:
                picked.append(int(i))
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
